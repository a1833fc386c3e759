/*
 * platform_posix.c -- bf_platform.h for a hosted POSIX program (Linux host, Raspberry Pi).
 *
 *   PROGRAM [PATH]        serve the protocol on the tty / pty at PATH (raw mode is set)
 *   PROGRAM               the same on $BF_SERIAL if set, otherwise on stdin / stdout
 *   PROGRAM -             stdin / stdout (e.g. over ssh)
 *
 * Counts are CLOCK_MONOTONIC nanoseconds.  A soft reboot re-executes the program with the
 * same arguments (fresh static state, the serial path reopened).  The program exits with 0
 * when the other end closes the link, 1 when PATH cannot be opened.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "bf_platform.h"
#include "bf_runtime.h"

static int g_in_fd = 0;
static int g_out_fd = 1;
static char **g_argv;
static const char *g_path;
static uint8_t g_rbuf[256];
static size_t g_rpos;
static size_t g_rlen;

/* 8-bit clean, no echo, no line editing, no signals, no output translation. */
static void bf_posix_raw(int fd) {
    struct termios t;
    if (!isatty(fd) || tcgetattr(fd, &t) != 0) {
        return;
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= (tcflag_t)(CS8 | CREAD | CLOCAL);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    (void)tcsetattr(fd, TCSANOW, &t);
}

void bf_platform_init(void) {
    signal(SIGPIPE, SIG_IGN);
    if (g_path != NULL && strcmp(g_path, "-") != 0) {
        int fd = open(g_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "bf_runtime: cannot open %s: %s\n", g_path, strerror(errno));
            exit(1);
        }
        g_in_fd = fd;
        g_out_fd = fd;
    }
    bf_posix_raw(g_in_fd);
}

int bf_uart_getc(uint32_t timeout_ms) {
    struct pollfd p;
    ssize_t n;
    int r;
    if (g_rpos < g_rlen) {
        return g_rbuf[g_rpos++];
    }
    p.fd = g_in_fd;
    p.events = POLLIN;
    p.revents = 0;
    r = poll(&p, 1, timeout_ms > 0x7FFFFFFFu ? -1 : (int)timeout_ms);
    if (r <= 0) {
        return BF_UART_TIMEOUT; /* includes EINTR */
    }
    n = read(g_in_fd, g_rbuf, sizeof g_rbuf);
    if (n > 0) {
        g_rpos = 1;
        g_rlen = (size_t)n;
        return g_rbuf[0];
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return BF_UART_TIMEOUT;
    }
    return BF_UART_CLOSED; /* end of file, or EIO: the pty's other side is gone */
}

void bf_uart_write(const uint8_t *data, size_t n) {
    while (n > 0) {
        ssize_t w = write(g_out_fd, data, n);
        if (w > 0) {
            data += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd p;
            p.fd = g_out_fd;
            p.events = POLLOUT;
            p.revents = 0;
            (void)poll(&p, 1, 100);
        } else {
            return; /* the host is gone; bf_uart_getc() will report it */
        }
    }
}

uint32_t bf_timer_read(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

void bf_timer_begin(void) {
}

uint32_t bf_timer_hz(void) {
    return 1000000000u;
}

uint8_t bf_timer_kind(void) {
    return BF_COUNTER_NANOSECONDS;
}

void bf_platform_reset(void) {
    if (isatty(g_out_fd)) {
        (void)tcdrain(g_out_fd);
    }
    if (g_argv != NULL) {
        execv("/proc/self/exe", g_argv);
        execvp(g_argv[0], g_argv);
    }
    fprintf(stderr, "bf_runtime: reboot failed: %s\n", strerror(errno));
    _exit(3);
}

#ifndef BF_POSIX_NO_MAIN
int main(int argc, char **argv) {
    g_argv = argv;
    g_path = argc > 1 ? argv[1] : getenv("BF_SERIAL");
    return bf_runtime_run();
}
#endif
