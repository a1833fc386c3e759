/*
 * stm32_usart_v2.c -- STM32F7/L4/G4/H7 USART and STM32 LPUART (ISR/RDR/TDR layout), polled.
 *
 * Registers: CR1 0x00 (UE bit 0, RE bit 2, TE bit 3), BRR 0x0C, ISR 0x1C (ORE, RXNE, TC, TXE),
 * ICR 0x20 (ORECF), RDR 0x24, TDR 0x28.  BRR = f / baud for a USART (16x oversampling) and
 * 256 f / baud for an LPUART (board kind stm32-lpuart, same registers).
 *
 * Real boards only: the bus clock of the instance is enabled and, when the board file names
 * pins, they are routed to alternate function BF_UART_PIN_FUNCTION.  Memory maps known here:
 * the STM32F7's (RCC 0x40023800, GPIOx 0x40020000 + 0x400 x) for USARTs, the STM32L4's (RCC
 * 0x40021000, GPIOx 0x48000000 + 0x400 x) for LPUART1; on the L4+ port G is powered by
 * VDDIO2, which PWR_CR2.IOSV must validate before its pins work.  Nothing is polled.
 */
#include "bf_port.h"
#include "stm32_gpio.h"

#define BF_USART_CR1 (BF_UART_BASE + 0x00u)
#define BF_USART_BRR (BF_UART_BASE + 0x0Cu)
#define BF_USART_ISR (BF_UART_BASE + 0x1Cu)
#define BF_USART_ICR (BF_UART_BASE + 0x20u)
#define BF_USART_RDR (BF_UART_BASE + 0x24u)
#define BF_USART_TDR (BF_UART_BASE + 0x28u)
#define BF_CR1_UE (1u << 0)
#define BF_CR1_RE (1u << 2)
#define BF_CR1_TE (1u << 3)
#define BF_ISR_ORE (1u << 3)
#define BF_ISR_RXNE (1u << 5)
#define BF_ISR_TC (1u << 6)
#define BF_ISR_TXE (1u << 7)

#if defined(BF_UART_KIND_STM32_LPUART)
#define BF_BRR ((uint32_t)(((uint64_t)BF_UART_CLOCK_HZ * 256u + BF_UART_BAUD / 2u) / BF_UART_BAUD))
#else
#define BF_BRR ((BF_UART_CLOCK_HZ + BF_UART_BAUD / 2u) / BF_UART_BAUD)
#endif

#if !BF_EMULATED
#if defined(BF_UART_KIND_STM32_LPUART)
/* STM32L4 / L4+ */
#define BF_RCC 0x40021000u
#define BF_RCC_GPIOENR (BF_RCC + 0x4Cu) /* AHB2ENR */
#define BF_GPIO(port) (0x48000000u + 0x400u * (uint32_t)(port))
#define BF_PWR_CR2 0x40007004u
#define BF_RCC_APB1ENR1 (BF_RCC + 0x58u)
#if defined(BF_UART_INSTANCE_LPUART1)
#define BF_UART_ENR (BF_RCC + 0x5Cu) /* APB1ENR2 */
#define BF_UART_ENBIT 0u
#else
#error "stm32-lpuart: unknown instance (expected LPUART1)"
#endif
#else
/* STM32F7 */
#define BF_RCC 0x40023800u
#define BF_RCC_GPIOENR (BF_RCC + 0x30u) /* AHB1ENR */
#define BF_GPIO(port) (0x40020000u + 0x400u * (uint32_t)(port))
#if defined(BF_UART_INSTANCE_USART1)
#define BF_UART_ENR (BF_RCC + 0x44u)
#define BF_UART_ENBIT 4u
#elif defined(BF_UART_INSTANCE_USART6)
#define BF_UART_ENR (BF_RCC + 0x44u)
#define BF_UART_ENBIT 5u
#elif defined(BF_UART_INSTANCE_USART2)
#define BF_UART_ENR (BF_RCC + 0x40u)
#define BF_UART_ENBIT 17u
#elif defined(BF_UART_INSTANCE_USART3)
#define BF_UART_ENR (BF_RCC + 0x40u)
#define BF_UART_ENBIT 18u
#else
#error "stm32-usart-v2: unknown instance (expected USART1/2/3/6)"
#endif
#endif

static void bf_usart_clocks_and_pins(void) {
    BF_REG(BF_UART_ENR) |= 1u << BF_UART_ENBIT;
    (void)BF_REG(BF_UART_ENR);
#if defined(BF_UART_TX_PIN) && defined(BF_UART_PIN_FUNCTION)
#if defined(BF_PWR_CR2)
    if (BF_UART_TX_PORT == 6 || BF_UART_RX_PORT == 6) { /* port G: validate VDDIO2 */
        BF_REG(BF_RCC_APB1ENR1) |= 1u << 28;           /* PWREN */
        (void)BF_REG(BF_RCC_APB1ENR1);
        BF_REG(BF_PWR_CR2) |= 1u << 9;                  /* IOSV */
    }
#endif
    BF_REG(BF_RCC_GPIOENR) |= (1u << BF_UART_TX_PORT) | (1u << BF_UART_RX_PORT);
    (void)BF_REG(BF_RCC_GPIOENR);
    bf_stm32_pin_af(BF_GPIO(BF_UART_TX_PORT), BF_UART_TX_PIN, BF_UART_PIN_FUNCTION);
    bf_stm32_pin_af(BF_GPIO(BF_UART_RX_PORT), BF_UART_RX_PIN, BF_UART_PIN_FUNCTION);
#endif
}
#endif

void bf_port_uart_init(void) {
#if !BF_EMULATED
    bf_usart_clocks_and_pins();
#endif
    BF_REG(BF_USART_CR1) = 0;
    BF_REG(BF_USART_BRR) = BF_BRR;
    BF_REG(BF_USART_CR1) = BF_CR1_UE | BF_CR1_TE | BF_CR1_RE;
}

int bf_port_uart_poll(void) {
    uint32_t isr = BF_REG(BF_USART_ISR);
    if (isr & BF_ISR_ORE) {
        BF_REG(BF_USART_ICR) = BF_ISR_ORE; /* ORECF */
    }
    if (isr & BF_ISR_RXNE) {
        return (int)(BF_REG(BF_USART_RDR) & 0xFFu);
    }
    return -1;
}

void bf_port_uart_send(const uint8_t *data, size_t n) {
    size_t i;
    for (i = 0; i < n; ++i) {
        while (!(BF_REG(BF_USART_ISR) & BF_ISR_TXE)) {
        }
        BF_REG(BF_USART_TDR) = data[i];
    }
}

void bf_port_uart_flush(void) {
    while (!(BF_REG(BF_USART_ISR) & BF_ISR_TC)) {
    }
}
