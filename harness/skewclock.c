/* A wall clock off by SKEWCLOCK_SECONDS (LD_PRELOAD): CLOCK_REALTIME as read through
 * clock_gettime, gettimeofday and time, and nothing else. The monotonic clock, sleeps
 * and timed waits are the kernel's own, as on a machine whose clock is simply wrong.
 * (libfaketime 0.9.10 also rewrites clock_nanosleep, which breaks Python 3.11's
 * time.sleep: wolfcw/libfaketime#426.) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#define NS 1000000000LL

static long long offset_ns(void)
{
    static int read;
    static long long offset;
    if (!read) {
        const char *s = getenv("SKEWCLOCK_SECONDS");
        offset = s ? (long long)(atof(s) * 1e9) : 0;
        read = 1;
    }
    return offset;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (!real)
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long ns = (long long)ts->tv_sec * NS + ts->tv_nsec + offset_ns();
        ts->tv_sec = (time_t)(ns / NS);
        ts->tv_nsec = (long)(ns % NS);
        if (ts->tv_nsec < 0) {
            ts->tv_nsec += NS;
            ts->tv_sec -= 1;
        }
    }
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
