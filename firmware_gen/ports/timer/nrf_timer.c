/*
 * nrf_timer.c -- an nRF TIMERn (BF_TIMER_BASE) as bf_platform.h's 32-bit up-counter.
 *
 * The nRF51's Cortex-M0 has no SysTick.  TIMERn in timer mode, 32-bit, PRESCALER 0 counts the
 * 16 MHz peripheral clock; a read captures the count into CC[0].  bf_timer_begin() clears it,
 * which under QEMU -icount restarts it at a fixed phase, so counts repeat exactly.
 */
#include "bf_port.h"

#define BF_TIMER_TASKS_START (BF_TIMER_BASE + 0x000u)
#define BF_TIMER_TASKS_STOP (BF_TIMER_BASE + 0x004u)
#define BF_TIMER_TASKS_CLEAR (BF_TIMER_BASE + 0x00Cu)
#define BF_TIMER_TASKS_CAPTURE0 (BF_TIMER_BASE + 0x040u)
#define BF_TIMER_MODE (BF_TIMER_BASE + 0x504u)
#define BF_TIMER_BITMODE (BF_TIMER_BASE + 0x508u)
#define BF_TIMER_PRESCALER (BF_TIMER_BASE + 0x510u)
#define BF_TIMER_CC0 (BF_TIMER_BASE + 0x540u)

void bf_port_timer_init(void) {
    BF_REG(BF_TIMER_TASKS_STOP) = 1u;
    BF_REG(BF_TIMER_MODE) = 0u;      /* timer */
    BF_REG(BF_TIMER_BITMODE) = 3u;   /* 32 bit */
    BF_REG(BF_TIMER_PRESCALER) = 0u; /* f = 16 MHz */
    BF_REG(BF_TIMER_TASKS_CLEAR) = 1u;
    BF_REG(BF_TIMER_TASKS_START) = 1u;
}

uint32_t bf_timer_read(void) {
    BF_REG(BF_TIMER_TASKS_CAPTURE0) = 1u;
    return BF_REG(BF_TIMER_CC0);
}

void bf_timer_begin(void) {
    BF_REG(BF_TIMER_TASKS_CLEAR) = 1u;
}
