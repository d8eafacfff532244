// LD_PRELOAD shim for loadtest/compare-redis.sh: every fsync and
// fdatasync takes SLOW_FSYNC_US microseconds longer (after the real call),
// to compare two servers as if on a slower disk. Both servers get it.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

static void stall(void) {
    const char *us = getenv("SLOW_FSYNC_US");
    usleep(us ? (unsigned)atoi(us) : 0);
}

int fdatasync(int fd) {
    if (!real_fdatasync) real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    int r = real_fdatasync(fd);
    stall();
    return r;
}

int fsync(int fd) {
    if (!real_fsync) real_fsync = dlsym(RTLD_NEXT, "fsync");
    int r = real_fsync(fd);
    stall();
    return r;
}
