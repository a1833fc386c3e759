/*
 * sifive.c -- SiFive UART (FE310), polled.
 *
 * Registers: txdata 0x00 (bit 31: FIFO full), rxdata 0x04 (bit 31: FIFO empty; a read pops),
 * txctrl 0x08 (txen, txcnt watermark at bits 16..18), rxctrl 0x0C (rxen), ip 0x14 (txwm: the
 * transmit FIFO holds fewer than txcnt entries), div 0x18 = f / baud - 1.
 *
 * Real boards only: the TX/RX pins are switched to their I/O function 0 (GPIO 0x10012000:
 * iof_en 0x38, iof_sel 0x3C).
 */
#include "bf_port.h"

#define BF_SIFIVE_TXDATA (BF_UART_BASE + 0x00u)
#define BF_SIFIVE_RXDATA (BF_UART_BASE + 0x04u)
#define BF_SIFIVE_TXCTRL (BF_UART_BASE + 0x08u)
#define BF_SIFIVE_RXCTRL (BF_UART_BASE + 0x0Cu)
#define BF_SIFIVE_IP (BF_UART_BASE + 0x14u)
#define BF_SIFIVE_DIV (BF_UART_BASE + 0x18u)
#define BF_FIFO_BIT 0x80000000u
#define BF_GPIO_IOF_EN 0x10012038u
#define BF_GPIO_IOF_SEL 0x1001203Cu

void bf_port_uart_init(void) {
#if !BF_EMULATED && defined(BF_UART_TX_PIN)
    uint32_t pins = (1u << BF_UART_TX_PIN) | (1u << BF_UART_RX_PIN);
    BF_REG(BF_GPIO_IOF_SEL) &= ~pins;
    BF_REG(BF_GPIO_IOF_EN) |= pins;
#endif
    BF_REG(BF_SIFIVE_DIV) = (BF_UART_CLOCK_HZ + BF_UART_BAUD / 2u) / BF_UART_BAUD - 1u;
    BF_REG(BF_SIFIVE_TXCTRL) = 1u | (1u << 16); /* txen, txcnt = 1: txwm means "empty" */
    BF_REG(BF_SIFIVE_RXCTRL) = 1u;              /* rxen */
}

int bf_port_uart_poll(void) {
    uint32_t v = BF_REG(BF_SIFIVE_RXDATA);
    return (v & BF_FIFO_BIT) ? -1 : (int)(v & 0xFFu);
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        while (BF_REG(BF_SIFIVE_TXDATA) & BF_FIFO_BIT) {
        }
        BF_REG(BF_SIFIVE_TXDATA) = data[i];
    }
}

void bf_port_uart_flush(void) {
    while (!(BF_REG(BF_SIFIVE_IP) & 1u)) {
    }
}
