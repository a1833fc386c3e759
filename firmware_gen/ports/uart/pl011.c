/*
 * pl011.c -- Arm PL011 UART (as in TI Stellaris parts), polled.
 *
 * Registers: DR 0x00 (data; bits 8..11 receive errors), RSR/ECR 0x04, FR 0x18 (BUSY bit 3,
 * RXFE bit 4, TXFF bit 5), IBRD 0x24 / FBRD 0x28 (divisor f / (16 baud) in 16.6 fixed point),
 * LCR_H 0x2C (8 bits, FIFOs on), CR 0x30 (UARTEN, TXE, RXE).
 *
 * Real Stellaris boards only: the UART and GPIO port clocks are gated in SYSCTL (RCGC1 0x104,
 * RCGC2 0x108 at 0x400FE000) and the pins need AFSEL and DEN in their GPIO port.  Under QEMU
 * none of that is done: its lm3s6965evb must not see clock register writes (they change the
 * emulated clock).
 */
#include "bf_port.h"

#define BF_PL011_DR (BF_UART_BASE + 0x00u)
#define BF_PL011_ECR (BF_UART_BASE + 0x04u)
#define BF_PL011_FR (BF_UART_BASE + 0x18u)
#define BF_PL011_IBRD (BF_UART_BASE + 0x24u)
#define BF_PL011_FBRD (BF_UART_BASE + 0x28u)
#define BF_PL011_LCR_H (BF_UART_BASE + 0x2Cu)
#define BF_PL011_CR (BF_UART_BASE + 0x30u)
#define BF_FR_BUSY (1u << 3)
#define BF_FR_RXFE (1u << 4)
#define BF_FR_TXFF (1u << 5)

/* Divisor in 1/64ths: 64 f / (16 baud) = 4 f / baud, rounded. */
#define BF_DIV64 ((4u * BF_UART_CLOCK_HZ + BF_UART_BAUD / 2u) / BF_UART_BAUD)

#if !BF_EMULATED && defined(BF_UART_TX_PIN)
#define BF_SYSCTL_RCGC1 0x400FE104u
#define BF_SYSCTL_RCGC2 0x400FE108u
static uint32_t bf_stellaris_gpio(uint32_t port) {
    static const uint32_t bases[] = {0x40004000u, 0x40005000u, 0x40006000u, 0x40007000u,
                                     0x40024000u, 0x40025000u, 0x40026000u};
    return bases[port];
}

static void bf_pl011_clocks_and_pins(void) {
    uint32_t n = (BF_UART_BASE - 0x4000C000u) / 0x1000u; /* UART0 at 0x4000C000, UART1 ... */
    BF_REG(BF_SYSCTL_RCGC1) |= 1u << n;
    BF_REG(BF_SYSCTL_RCGC2) |= (1u << BF_UART_TX_PORT) | (1u << BF_UART_RX_PORT);
    (void)BF_REG(BF_SYSCTL_RCGC2);
    BF_REG(bf_stellaris_gpio(BF_UART_TX_PORT) + 0x420u) |= 1u << BF_UART_TX_PIN; /* AFSEL */
    BF_REG(bf_stellaris_gpio(BF_UART_TX_PORT) + 0x51Cu) |= 1u << BF_UART_TX_PIN; /* DEN */
    BF_REG(bf_stellaris_gpio(BF_UART_RX_PORT) + 0x420u) |= 1u << BF_UART_RX_PIN;
    BF_REG(bf_stellaris_gpio(BF_UART_RX_PORT) + 0x51Cu) |= 1u << BF_UART_RX_PIN;
}
#endif

void bf_port_uart_init(void) {
#if !BF_EMULATED && defined(BF_UART_TX_PIN)
    bf_pl011_clocks_and_pins();
#endif
    BF_REG(BF_PL011_CR) = 0;
    BF_REG(BF_PL011_IBRD) = BF_DIV64 >> 6;
    BF_REG(BF_PL011_FBRD) = BF_DIV64 & 0x3Fu;
    BF_REG(BF_PL011_LCR_H) = (3u << 5) | (1u << 4); /* 8 bits, FIFOs enabled */
    BF_REG(BF_PL011_ECR) = 0;
    BF_REG(BF_PL011_CR) = (1u << 0) | (1u << 8) | (1u << 9); /* UARTEN | TXE | RXE */
}

int bf_port_uart_poll(void) {
    uint32_t dr;
    if (BF_REG(BF_PL011_FR) & BF_FR_RXFE) {
        return -1;
    }
    dr = BF_REG(BF_PL011_DR);
    if (dr & 0xF00u) {
        BF_REG(BF_PL011_ECR) = 0; /* clear framing / parity / break / overrun */
    }
    return (int)(dr & 0xFFu);
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        while (BF_REG(BF_PL011_FR) & BF_FR_TXFF) {
        }
        BF_REG(BF_PL011_DR) = data[i];
    }
}

void bf_port_uart_flush(void) {
    while (BF_REG(BF_PL011_FR) & BF_FR_BUSY) {
    }
}
