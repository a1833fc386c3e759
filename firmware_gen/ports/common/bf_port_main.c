/*
 * bf_port_main.c -- bf_platform.h for bare-metal boards, on top of a UART driver, a counter and
 * the family's start-up code (see bf_port.h).  Also main() and the fault report.
 */
#include "bf_port.h"
#include "bf_runtime.h"

/* Milliseconds -> counter ticks for bf_uart_getc()'s timeout, capped at 2^31 ticks (no 64-bit
 * division: it would pull a libgcc helper into every image). */
static uint32_t bf_port_ticks(uint32_t ms) {
    const uint32_t per_ms = BF_TIMER_HZ / 1000u > 0u ? BF_TIMER_HZ / 1000u : 1u;
    return ms > 0x7FFFFFFFu / per_ms ? 0x7FFFFFFFu : ms * per_ms;
}

void bf_platform_init(void) {
    bf_port_uart_init();
    bf_port_timer_init();
    bf_port_enable_interrupts();
}

int bf_uart_getc(uint32_t timeout_ms) {
    uint32_t start = bf_timer_read();
    uint32_t limit = bf_port_ticks(timeout_ms);
    for (;;) {
        int c = bf_port_uart_poll();
        if (c >= 0) {
            return c;
        }
        if (bf_timer_read() - start >= limit) {
            return BF_UART_TIMEOUT;
        }
    }
}

void bf_uart_write(const uint8_t *data, size_t n) {
    bf_port_uart_send(data, n);
}

uint32_t bf_timer_hz(void) {
    return BF_TIMER_HZ;
}

uint8_t bf_timer_kind(void) {
    return (uint8_t)BF_COUNTER_KIND;
}

void bf_platform_reset(void) {
    bf_port_uart_flush();
    bf_port_restart();
}

int main(void) {
    return bf_runtime_run();
}

/* ---- fault report ---------------------------------------------------------------------- */

#define BF_FAULT_LINE_BYTES 256u

static char g_fault_line[BF_FAULT_LINE_BYTES];
static size_t g_fault_len;

static void bf_fault_append(const char *s) {
    while (*s != '\0' && g_fault_len < BF_FAULT_LINE_BYTES - 2u) {
        g_fault_line[g_fault_len++] = *s++;
    }
}

static void bf_fault_append_hex(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    char text[11];
    int k;
    text[0] = '0';
    text[1] = 'x';
    for (k = 0; k < 8; ++k) {
        text[2 + k] = digits[(v >> (28 - 4 * k)) & 0xFu];
    }
    text[10] = '\0';
    bf_fault_append(text);
}

/* The line, newline-terminated and NUL-terminated (for semihosting's SYS_WRITE0). */
static void bf_fault_format(const char *what, const char *const *names, const uint32_t *values, size_t n) {
    size_t k;
    g_fault_len = 0;
    bf_fault_append("BOARDFIT-FAULT ");
    bf_fault_append(what);
    for (k = 0; k < n; ++k) {
        bf_fault_append(" ");
        bf_fault_append(names[k]);
        bf_fault_append("=");
        bf_fault_append_hex(values[k]);
    }
    g_fault_line[g_fault_len++] = '\n';
    g_fault_line[g_fault_len] = '\0';
}

static void bf_fault_send(void) {
    static const uint8_t delimiter = 0;
    bf_port_uart_send(&delimiter, 1);
    bf_port_uart_send((const uint8_t *)g_fault_line, g_fault_len);
    bf_port_uart_send(&delimiter, 1);
    bf_port_uart_flush();
}

void bf_port_fault(const char *what, const char *const *names, const uint32_t *values, size_t n) {
    bf_fault_format(what, names, values, n);
    bf_fault_send();
#if BF_SEMIHOSTING
    {
        /* SYS_WRITE0 (0x04): the line on the emulator's console.  Then let the emulator's I/O
         * thread pass the UART bytes on (a UART register write is not yet a socket write):
         * a few million instructions, some milliseconds of emulation.  Then SYS_EXIT_EXTENDED
         * (0x20) with ADP_Stopped_ApplicationExit and the exit code. */
        static const uint32_t exit_block[2] = {0x20026u, BF_FAULT_EXIT_CODE};
        volatile uint32_t spin;
        (void)bf_port_semihost(0x04u, g_fault_line);
        for (spin = 0; spin < 1000000u; spin = spin + 1u) {
        }
        (void)bf_port_semihost(0x20u, exit_block);
    }
#endif
    for (;;) {
        /* The runtime is gone: answer every frame the host (re)sends with the report. */
        if (bf_port_uart_poll() == 0) {
            bf_fault_send();
        }
    }
}
