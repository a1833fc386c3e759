/*
 * cmsdk.c -- Arm CMSDK APB UART (the MPS2 FPGA images), polled.
 *
 * Registers: DATA 0x00, STATE 0x04 (TXFULL, RXFULL, TX/RX overrun: write 1 to clear), CTRL
 * 0x08 (TXEN, RXEN), BAUDDIV 0x10 = UART clock / baud (at least 16).  Its clock is always
 * running: no clock gating or pin routing exists on these boards.
 */
#include "bf_port.h"

#define BF_UART_DATA (BF_UART_BASE + 0x00u)
#define BF_UART_STATE (BF_UART_BASE + 0x04u)
#define BF_UART_CTRL (BF_UART_BASE + 0x08u)
#define BF_UART_BAUDDIV (BF_UART_BASE + 0x10u)
#define BF_STATE_TXFULL 0x1u
#define BF_STATE_RXFULL 0x2u
#define BF_STATE_RXOVERRUN 0x8u

#define BF_BAUDDIV ((BF_UART_CLOCK_HZ + BF_UART_BAUD / 2u) / BF_UART_BAUD)
#if BF_BAUDDIV < 16
#error "CMSDK UART: BAUDDIV below 16; the UART clock is too slow for this baud rate"
#endif

void bf_port_uart_init(void) {
    BF_REG(BF_UART_CTRL) = 0;
    BF_REG(BF_UART_BAUDDIV) = BF_BAUDDIV;
    BF_REG(BF_UART_STATE) = 0xFu; /* clear stale overrun flags */
    BF_REG(BF_UART_CTRL) = 0x3u;  /* TXEN | RXEN */
}

int bf_port_uart_poll(void) {
    uint32_t state = BF_REG(BF_UART_STATE);
    if (state & BF_STATE_RXOVERRUN) {
        BF_REG(BF_UART_STATE) = BF_STATE_RXOVERRUN;
    }
    if (state & BF_STATE_RXFULL) {
        return (int)(BF_REG(BF_UART_DATA) & 0xFFu);
    }
    return -1;
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        while (BF_REG(BF_UART_STATE) & BF_STATE_TXFULL) {
        }
        BF_REG(BF_UART_DATA) = data[i];
    }
}

void bf_port_uart_flush(void) {
    while (BF_REG(BF_UART_STATE) & BF_STATE_TXFULL) {
    }
}
