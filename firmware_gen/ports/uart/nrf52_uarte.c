/*
 * nrf52_uarte.c -- nRF52 UARTE (EasyDMA), polled.
 *
 * Tasks STARTRX 0x000 / STARTTX 0x008, events ENDRX 0x110 / ENDTX 0x120 / ERROR 0x124,
 * ERRORSRC 0x480, ENABLE 0x500 (8), PSEL.TXD 0x50C, PSEL.RXD 0x514 (bit 5 selects port 1),
 * BAUDRATE 0x524 (a code), RXD.PTR/MAXCNT 0x534/0x538, TXD.PTR/MAXCNT 0x544/0x548, CONFIG 0x56C.
 *
 * EasyDMA only reads and writes RAM: received bytes land one at a time in g_rx (a new one-byte
 * transfer is started as soon as one ends; the UARTE's receive FIFO holds bytes meanwhile) and
 * transmitted bytes are copied through g_tx, so data in flash can be sent.  The nRF52's clocks
 * run out of reset; the baud code does not depend on them.
 */
#include "bf_port.h"

#define BF_UARTE_STARTRX (BF_UART_BASE + 0x000u)
#define BF_UARTE_STARTTX (BF_UART_BASE + 0x008u)
#define BF_UARTE_ENDRX (BF_UART_BASE + 0x110u)
#define BF_UARTE_ENDTX (BF_UART_BASE + 0x120u)
#define BF_UARTE_ERROR (BF_UART_BASE + 0x124u)
#define BF_UARTE_ERRORSRC (BF_UART_BASE + 0x480u)
#define BF_UARTE_ENABLE (BF_UART_BASE + 0x500u)
#define BF_UARTE_PSEL_TXD (BF_UART_BASE + 0x50Cu)
#define BF_UARTE_PSEL_RXD (BF_UART_BASE + 0x514u)
#define BF_UARTE_BAUDRATE (BF_UART_BASE + 0x524u)
#define BF_UARTE_RXD_PTR (BF_UART_BASE + 0x534u)
#define BF_UARTE_RXD_MAXCNT (BF_UART_BASE + 0x538u)
#define BF_UARTE_TXD_PTR (BF_UART_BASE + 0x544u)
#define BF_UARTE_TXD_MAXCNT (BF_UART_BASE + 0x548u)
#define BF_UARTE_CONFIG (BF_UART_BASE + 0x56Cu)
#define BF_TX_CHUNK 64u

#if BF_UART_BAUD == 9600
#define BF_BAUD_CODE 0x00275000u
#elif BF_UART_BAUD == 38400
#define BF_BAUD_CODE 0x009D0000u
#elif BF_UART_BAUD == 115200
#define BF_BAUD_CODE 0x01D60000u
#elif BF_UART_BAUD == 230400
#define BF_BAUD_CODE 0x03B00000u
#elif BF_UART_BAUD == 460800
#define BF_BAUD_CODE 0x07400000u
#elif BF_UART_BAUD == 921600
#define BF_BAUD_CODE 0x0F000000u
#elif BF_UART_BAUD == 1000000
#define BF_BAUD_CODE 0x10000000u
#else
#error "nrf52-uarte: no BAUDRATE code for this baud rate"
#endif

static volatile uint8_t g_rx;
static uint8_t g_tx[BF_TX_CHUNK];

static void bf_uarte_start_rx(void) {
    BF_REG(BF_UARTE_RXD_PTR) = (uint32_t)(uintptr_t)&g_rx;
    BF_REG(BF_UARTE_RXD_MAXCNT) = 1u;
    BF_REG(BF_UARTE_STARTRX) = 1u;
}

void bf_port_uart_init(void) {
#if defined(BF_UART_TX_PIN)
    BF_REG(BF_UARTE_PSEL_TXD) = 32u * BF_UART_TX_PORT + BF_UART_TX_PIN;
    BF_REG(BF_UARTE_PSEL_RXD) = 32u * BF_UART_RX_PORT + BF_UART_RX_PIN;
#endif
    BF_REG(BF_UARTE_BAUDRATE) = BF_BAUD_CODE;
    BF_REG(BF_UARTE_CONFIG) = 0;
    BF_REG(BF_UARTE_ENABLE) = 8u;
    BF_REG(BF_UARTE_ENDRX) = 0;
    BF_REG(BF_UARTE_ENDTX) = 0;
    bf_uarte_start_rx();
}

int bf_port_uart_poll(void) {
    int c;
    if (BF_REG(BF_UARTE_ERROR)) {
        BF_REG(BF_UARTE_ERROR) = 0;
        BF_REG(BF_UARTE_ERRORSRC) = BF_REG(BF_UARTE_ERRORSRC);
    }
    if (!BF_REG(BF_UARTE_ENDRX)) {
        return -1;
    }
    BF_REG(BF_UARTE_ENDRX) = 0;
    c = g_rx;
    bf_uarte_start_rx();
    return c;
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    while (n > 0) {
        size_t k;
        size_t m = n < BF_TX_CHUNK ? n : BF_TX_CHUNK;
        for (k = 0; k < m; ++k) {
            g_tx[k] = data[k];
        }
        BF_REG(BF_UARTE_TXD_PTR) = (uint32_t)(uintptr_t)g_tx;
        BF_REG(BF_UARTE_TXD_MAXCNT) = (uint32_t)m;
        BF_REG(BF_UARTE_STARTTX) = 1u;
        while (!BF_REG(BF_UARTE_ENDTX)) {
        }
        BF_REG(BF_UARTE_ENDTX) = 0;
        data += m;
        n -= m;
    }
}

void bf_port_uart_flush(void) {
    /* bf_port_uart_send() waits for ENDTX. */
}
