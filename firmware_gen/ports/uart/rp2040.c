/*
 * rp2040.c -- RP2040 UART0/1: a PL011 behind the RESETS block and GPIO function select, polled.
 *
 * Bring-up (real boards only; no RP2040 is emulated): take IO_BANK0, PADS_BANK0 and the UART
 * out of reset (RESETS 0x4000C000: RESET 0x0 with atomic clear alias +0x3000, RESET_DONE 0x8),
 * enable clk_peri from clk_sys (CLOCKS 0x40008000, CLK_PERI_CTRL 0x48), and select
 * BF_UART_PIN_FUNCTION (2 = UART) on the TX/RX pins (IO_BANK0 0x40014000, GPIOn_CTRL
 * 0x04 + 8 n).  The divisor assumes clk_peri = BF_UART_CLOCK_HZ; boardfit does not start the
 * crystal oscillator or PLLs (see firmware.py: the RP2040 also needs a boot2 stage).
 */
#include "bf_port.h"

#define BF_PL011_DR (BF_UART_BASE + 0x00u)
#define BF_PL011_RSR (BF_UART_BASE + 0x04u)
#define BF_PL011_FR (BF_UART_BASE + 0x18u)
#define BF_PL011_IBRD (BF_UART_BASE + 0x24u)
#define BF_PL011_FBRD (BF_UART_BASE + 0x28u)
#define BF_PL011_LCR_H (BF_UART_BASE + 0x2Cu)
#define BF_PL011_CR (BF_UART_BASE + 0x30u)
#define BF_FR_BUSY (1u << 3)
#define BF_FR_RXFE (1u << 4)
#define BF_FR_TXFF (1u << 5)
#define BF_DIV64 ((4u * BF_UART_CLOCK_HZ + BF_UART_BAUD / 2u) / BF_UART_BAUD)

#define BF_RESETS 0x4000C000u
#define BF_RESETS_CLR (BF_RESETS + 0x3000u)
#define BF_RESETS_DONE (BF_RESETS + 0x8u)
#define BF_CLK_PERI_CTRL (0x40008000u + 0x48u)
#define BF_IO_BANK0 0x40014000u
#define BF_RESET_IO_BANK0 (1u << 5)
#define BF_RESET_PADS_BANK0 (1u << 8)
#if BF_UART_BASE == 0x40034000u
#define BF_RESET_UART (1u << 22)
#elif BF_UART_BASE == 0x40038000u
#define BF_RESET_UART (1u << 23)
#else
#error "rp2040: the UART base is neither UART0 nor UART1"
#endif

void bf_port_uart_init(void) {
#if !BF_EMULATED
    uint32_t mask = BF_RESET_IO_BANK0 | BF_RESET_PADS_BANK0 | BF_RESET_UART;
    BF_REG(BF_CLK_PERI_CTRL) = 1u << 11; /* ENABLE, AUXSRC = clk_sys */
    BF_REG(BF_RESETS_CLR) = mask;
    while ((BF_REG(BF_RESETS_DONE) & mask) != mask) {
    }
#if defined(BF_UART_TX_PIN) && defined(BF_UART_PIN_FUNCTION)
    BF_REG(BF_IO_BANK0 + 0x04u + 8u * BF_UART_TX_PIN) = BF_UART_PIN_FUNCTION;
    BF_REG(BF_IO_BANK0 + 0x04u + 8u * BF_UART_RX_PIN) = BF_UART_PIN_FUNCTION;
#endif
#endif
    BF_REG(BF_PL011_CR) = 0;
    BF_REG(BF_PL011_IBRD) = BF_DIV64 >> 6;
    BF_REG(BF_PL011_FBRD) = BF_DIV64 & 0x3Fu;
    BF_REG(BF_PL011_LCR_H) = (3u << 5) | (1u << 4); /* 8 bits, FIFOs enabled */
    BF_REG(BF_PL011_CR) = (1u << 0) | (1u << 8) | (1u << 9);
}

int bf_port_uart_poll(void) {
    uint32_t dr;
    if (BF_REG(BF_PL011_FR) & BF_FR_RXFE) {
        return -1;
    }
    dr = BF_REG(BF_PL011_DR);
    if (dr & 0xF00u) {
        BF_REG(BF_PL011_RSR) = 0;
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
