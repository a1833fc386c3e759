/*
 * nrf51_uart.c -- nRF51 UART (TXD/RXD registers, no EasyDMA), polled.
 *
 * Tasks STARTRX 0x000 / STARTTX 0x008, events RXDRDY 0x108 / TXDRDY 0x11C / ERROR 0x124,
 * ERRORSRC 0x480, ENABLE 0x500 (4), PSELTXD 0x50C, PSELRXD 0x514, RXD 0x518, TXD 0x51C,
 * BAUDRATE 0x524 (a code, not a divisor), CONFIG 0x56C.  RXDRDY is cleared before RXD is read
 * (the reference manual's order: reading RXD may raise it again for the next byte).
 */
#include "bf_port.h"

#define BF_UART_STARTRX (BF_UART_BASE + 0x000u)
#define BF_UART_STARTTX (BF_UART_BASE + 0x008u)
#define BF_UART_RXDRDY (BF_UART_BASE + 0x108u)
#define BF_UART_TXDRDY (BF_UART_BASE + 0x11Cu)
#define BF_UART_ERROR (BF_UART_BASE + 0x124u)
#define BF_UART_ERRORSRC (BF_UART_BASE + 0x480u)
#define BF_UART_ENABLE (BF_UART_BASE + 0x500u)
#define BF_UART_PSELTXD (BF_UART_BASE + 0x50Cu)
#define BF_UART_PSELRXD (BF_UART_BASE + 0x514u)
#define BF_UART_RXD (BF_UART_BASE + 0x518u)
#define BF_UART_TXD (BF_UART_BASE + 0x51Cu)
#define BF_UART_BAUDRATE (BF_UART_BASE + 0x524u)
#define BF_UART_CONFIG (BF_UART_BASE + 0x56Cu)

#if BF_UART_BAUD == 9600
#define BF_BAUD_CODE 0x00275000u
#elif BF_UART_BAUD == 38400
#define BF_BAUD_CODE 0x009D5000u
#elif BF_UART_BAUD == 115200
#define BF_BAUD_CODE 0x01D7E000u
#elif BF_UART_BAUD == 230400
#define BF_BAUD_CODE 0x03AFB000u
#elif BF_UART_BAUD == 460800
#define BF_BAUD_CODE 0x075F7000u
#elif BF_UART_BAUD == 921600
#define BF_BAUD_CODE 0x0EBEDFA4u
#elif BF_UART_BAUD == 1000000
#define BF_BAUD_CODE 0x10000000u
#else
#error "nrf51-uart: no BAUDRATE code for this baud rate"
#endif

void bf_port_uart_init(void) {
#if defined(BF_UART_TX_PIN)
    BF_REG(BF_UART_PSELTXD) = 32u * BF_UART_TX_PORT + BF_UART_TX_PIN;
    BF_REG(BF_UART_PSELRXD) = 32u * BF_UART_RX_PORT + BF_UART_RX_PIN;
#endif
    BF_REG(BF_UART_BAUDRATE) = BF_BAUD_CODE;
    BF_REG(BF_UART_CONFIG) = 0; /* no parity, no flow control */
    BF_REG(BF_UART_ENABLE) = 4u;
    BF_REG(BF_UART_RXDRDY) = 0;
    BF_REG(BF_UART_TXDRDY) = 0;
    BF_REG(BF_UART_STARTRX) = 1u;
    BF_REG(BF_UART_STARTTX) = 1u;
}

int bf_port_uart_poll(void) {
    if (BF_REG(BF_UART_ERROR)) {
        BF_REG(BF_UART_ERROR) = 0;
        BF_REG(BF_UART_ERRORSRC) = BF_REG(BF_UART_ERRORSRC); /* write 1s to clear */
    }
    if (BF_REG(BF_UART_RXDRDY)) {
        BF_REG(BF_UART_RXDRDY) = 0;
        return (int)(BF_REG(BF_UART_RXD) & 0xFFu);
    }
    return -1;
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        BF_REG(BF_UART_TXD) = data[i];
        while (!BF_REG(BF_UART_TXDRDY)) {
        }
        BF_REG(BF_UART_TXDRDY) = 0;
    }
}

void bf_port_uart_flush(void) {
    /* bf_port_uart_send() waits for TXDRDY after every byte. */
}
