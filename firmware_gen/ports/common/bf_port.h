/*
 * bf_port.h -- how a bare-metal board port is put together (internal to firmware_gen/ports).
 *
 * A port is assembled from files chosen by board data (firmware_gen/firmware.py):
 *   common/bf_port_main.c        main(), bf_platform.h on top of the pieces below, fault text
 *   <family>/bf_port_family.c    start-up, vectors / trap entry, reset, semihosting exit
 *   uart/<uart kind>.c           the UART driver (polled, no interrupts)
 *   timer/<timer kind>.c         the inference counter: bf_timer_read() and bf_timer_begin()
 * and configured by bf_board.h, generated from boards/<id>.toml (addresses, clocks, pins, what
 * the counter counts).  Nothing in these files names a board.
 *
 * Clocks: the firmware never programs PLLs or oscillators.  It runs at the clock the chip has
 * out of reset (BF_CORE_CLOCK_HZ: the board file's reset_clock_hz, else its clock_hz) and
 * derives UART divisors and counter rates from it.  Under emulation no clock or pin set-up is
 * done at all (QEMU's RCC reads as 0, so polling a ready bit would hang); on real boards the
 * UART drivers only enable their own bus clock and route their pins.
 */
#ifndef BF_PORT_H
#define BF_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "bf_board.h"
#include "bf_platform.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* ---- UART driver (uart/<kind>.c) ------------------------------------------------------- */

/* Enables the receiver and transmitter at BF_UART_BAUD.  Transmits nothing. */
void bf_port_uart_init(void);

/* A received byte (0..255), or -1 when none is waiting.  Clears receive overruns (the
 * protocol recovers lost bytes by retransmission). */
int bf_port_uart_poll(void);

/* Blocks until all n bytes are handed to the transmitter. */
void bf_port_uart_send(const uint8_t *data, size_t n);

/* Blocks until the last byte has left the transmitter (before a reset). */
void bf_port_uart_flush(void);

/* ---- counter (timer/<kind>.c): bf_timer_read() and bf_timer_begin() of bf_platform.h --- */

/* Starts the free-running counter (interrupts are enabled later by bf_platform_init). */
void bf_port_timer_init(void);

/* ---- family (<family>/bf_port_family.c) ------------------------------------------------ */

/* Enables interrupts (the SysTick wrap count needs them). */
void bf_port_enable_interrupts(void);

/* Restarts the program from its reset entry with fresh RAM. */
void bf_port_restart(void);

/* One semihosting call (operation `op`, parameter `arg`; returns the result).  Only called when
 * BF_SEMIHOSTING: without the emulator's semihosting a BKPT 0xAB / EBREAK stops the core. */
uint32_t bf_port_semihost(uint32_t op, const void *arg);

/* ---- faults (common/bf_port_main.c) ---------------------------------------------------- */

/* Exit status of an emulator after a fault (semihosting); firmware.FAULT_EXIT_CODE. */
#define BF_FAULT_EXIT_CODE 0xFAu

/* Reports a fault over the UART as one line between two 0x00 delimiters (so the host's frame
 * decoder sees one bad frame, never a merged one):
 *     BOARDFIT-FAULT <what> name=0x%08x name=0x%08x ...
 * Under emulation with semihosting the line also goes to the emulator's console (its stderr),
 * the UART gets time to drain, and the emulator exits with BF_FAULT_EXIT_CODE.  On a real
 * board the line is sent again whenever a delimiter arrives (every retransmission of the
 * host); it never returns.  `names` and `values` have n entries. */
void bf_port_fault(const char *what, const char *const *names, const uint32_t *values, size_t n)
    __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif /* BF_PORT_H */
