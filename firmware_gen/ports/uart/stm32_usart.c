/*
 * stm32_usart.c -- STM32F2/F4 USART (SR/DR register layout), polled.
 *
 * Registers: SR 0x00 (RXNE, TC, TXE, ORE), DR 0x04, BRR 0x08 = UART clock / baud (16x
 * oversampling), CR1 0x0C (UE, TE, RE).  Reading SR then DR clears an overrun.
 *
 * Real boards only (not under emulation): the USART's clock is enabled in RCC and, when the
 * board file names pins, they are routed to alternate function BF_UART_PIN_FUNCTION.  The RCC
 * and GPIO addresses are the STM32F2/F4 memory map (RCC 0x40023800, GPIOx 0x40020000 +
 * 0x400 x); only enable bits are written, nothing is polled.  Under QEMU (netduinoplus2) the
 * USART drops bytes until UE and RE are set: the host's retried ping covers that.
 */
#include "bf_port.h"
#include "stm32_gpio.h"

#define BF_USART_SR (BF_UART_BASE + 0x00u)
#define BF_USART_DR (BF_UART_BASE + 0x04u)
#define BF_USART_BRR (BF_UART_BASE + 0x08u)
#define BF_USART_CR1 (BF_UART_BASE + 0x0Cu)
#define BF_SR_ORE (1u << 3)
#define BF_SR_RXNE (1u << 5)
#define BF_SR_TC (1u << 6)
#define BF_SR_TXE (1u << 7)
#define BF_CR1_UE (1u << 13)
#define BF_CR1_TE (1u << 3)
#define BF_CR1_RE (1u << 2)

#if !BF_EMULATED
#define BF_RCC 0x40023800u
#define BF_RCC_AHB1ENR (BF_RCC + 0x30u)
#define BF_RCC_APB1ENR (BF_RCC + 0x40u)
#define BF_RCC_APB2ENR (BF_RCC + 0x44u)
#define BF_GPIO(port) (0x40020000u + 0x400u * (uint32_t)(port))
#if defined(BF_UART_INSTANCE_USART1)
#define BF_UART_ENR BF_RCC_APB2ENR
#define BF_UART_ENBIT 4u
#elif defined(BF_UART_INSTANCE_USART6)
#define BF_UART_ENR BF_RCC_APB2ENR
#define BF_UART_ENBIT 5u
#elif defined(BF_UART_INSTANCE_USART2)
#define BF_UART_ENR BF_RCC_APB1ENR
#define BF_UART_ENBIT 17u
#elif defined(BF_UART_INSTANCE_USART3)
#define BF_UART_ENR BF_RCC_APB1ENR
#define BF_UART_ENBIT 18u
#elif defined(BF_UART_INSTANCE_UART4)
#define BF_UART_ENR BF_RCC_APB1ENR
#define BF_UART_ENBIT 19u
#elif defined(BF_UART_INSTANCE_UART5)
#define BF_UART_ENR BF_RCC_APB1ENR
#define BF_UART_ENBIT 20u
#else
#error "stm32-usart: unknown instance (expected USART1/2/3/6 or UART4/5)"
#endif

static void bf_usart_clocks_and_pins(void) {
    BF_REG(BF_UART_ENR) |= 1u << BF_UART_ENBIT;
#if defined(BF_UART_TX_PIN) && defined(BF_UART_PIN_FUNCTION)
    BF_REG(BF_RCC_AHB1ENR) |= (1u << BF_UART_TX_PORT) | (1u << BF_UART_RX_PORT);
    (void)BF_REG(BF_RCC_AHB1ENR); /* let the clock start before touching GPIO */
    bf_stm32_pin_af(BF_GPIO(BF_UART_TX_PORT), BF_UART_TX_PIN, BF_UART_PIN_FUNCTION);
    bf_stm32_pin_af(BF_GPIO(BF_UART_RX_PORT), BF_UART_RX_PIN, BF_UART_PIN_FUNCTION);
#endif
    (void)BF_REG(BF_UART_ENR);
}
#endif

void bf_port_uart_init(void) {
#if !BF_EMULATED
    bf_usart_clocks_and_pins();
#endif
    BF_REG(BF_USART_CR1) = 0;
    BF_REG(BF_USART_BRR) = (BF_UART_CLOCK_HZ + BF_UART_BAUD / 2u) / BF_UART_BAUD;
    BF_REG(BF_USART_CR1) = BF_CR1_UE | BF_CR1_TE | BF_CR1_RE;
}

int bf_port_uart_poll(void) {
    uint32_t sr = BF_REG(BF_USART_SR);
    if (sr & (BF_SR_RXNE | BF_SR_ORE)) {
        uint32_t dr = BF_REG(BF_USART_DR); /* also clears ORE */
        if (sr & BF_SR_RXNE) {
            return (int)(dr & 0xFFu);
        }
    }
    return -1;
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        while (!(BF_REG(BF_USART_SR) & BF_SR_TXE)) {
        }
        BF_REG(BF_USART_DR) = data[i];
    }
}

void bf_port_uart_flush(void) {
    while (!(BF_REG(BF_USART_SR) & BF_SR_TC)) {
    }
}
