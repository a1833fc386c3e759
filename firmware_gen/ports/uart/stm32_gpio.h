/*
 * stm32_gpio.h -- routing a UART's pins to their alternate function on an STM32 (real boards).
 *
 * The GPIO register block is the same on every STM32 except the F1: MODER 0x00 (2 bits per
 * pin, 2 = alternate function), OSPEEDR 0x08, PUPDR 0x0C, AFRL 0x20 / AFRH 0x24 (4 bits per
 * pin).  Where the blocks sit and how their clocks are enabled differs per family; the driver
 * that includes this passes the block's address.
 */
#ifndef BF_STM32_GPIO_H
#define BF_STM32_GPIO_H

#include "bf_port.h"

static inline void bf_stm32_pin_af(uint32_t gpio, uint32_t pin, uint32_t af) {
    uint32_t afr = gpio + (pin < 8u ? 0x20u : 0x24u);
    uint32_t shift = 4u * (pin & 7u);
    BF_REG(gpio + 0x00u) = (BF_REG(gpio + 0x00u) & ~(3u << (2u * pin))) | (2u << (2u * pin));
    BF_REG(gpio + 0x08u) |= 2u << (2u * pin); /* high speed */
    BF_REG(gpio + 0x0Cu) = (BF_REG(gpio + 0x0Cu) & ~(3u << (2u * pin))) | (1u << (2u * pin)); /* pull-up */
    BF_REG(afr) = (BF_REG(afr) & ~(0xFu << shift)) | (af << shift);
}

#endif /* BF_STM32_GPIO_H */
