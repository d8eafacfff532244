// LD_PRELOAD shim for the power-loss test (tests/power_loss.rs).
//
// Records, in order, every call that changes a file under one directory
// (PL_DIR) or makes it durable, into a binary trace (PL_TRACE), with the
// data of every write. Nothing is changed: each call goes to libc as it was
// made, and its result and errno are returned as they were.
//
// Each trace record is a 32-byte header followed by `len - 32` payload bytes:
//   u32 len | u32 type | u32 tid | i32 fd | u64 a | u64 b | payload
// The trace file is opened with O_APPEND and each record is written with one
// writev, so records of several threads (and the test's own marks, written
// by another process to the same file) never interleave, and their order in
// the file is the order in which they were appended.
//
// Ordering rules the model relies on:
// - an operation is appended after the call returned successfully (so its
//   position is after it took effect), except close, appended before the
//   real close (so the fd cannot be reused by an open appended earlier);
// - fsync and fdatasync are appended twice: SYNC_BEGIN before the real call
//   (with the file size from fstat) and SYNC_END after it returned 0. A sync
//   covers what was appended before its SYNC_BEGIN.
//
// Calls Rust std makes (glibc): open64/openat64, close, write, pwrite64,
// fsync, fdatasync, ftruncate64, rename, unlink. rustix makes raw system
// calls (fallocate, flock), which no shim can see; the size that fallocate
// gives a file is caught by the fstat at SYNC_BEGIN.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    T_OPEN = 1,      // fd, a = flags, payload = path relative to PL_DIR ("" = the directory)
    T_CLOSE = 2,     // fd
    T_WRITE = 3,     // fd, a = offset, payload = data
    T_TRUNC = 4,     // fd, a = size
    T_SYNC_BEGIN = 5,// fd, a = 1 fdatasync / 0 fsync, b = st_size
    T_SYNC_END = 6,  // fd, a = 1 fdatasync / 0 fsync
    T_RENAME = 7,    // a = length of from; payload = from, to (relative)
    T_UNLINK = 8,    // payload = path (relative)
    T_FALLOC = 9,    // fd, a = offset, b = length (only if libc's wrapper is used)
    T_SFR = 10,      // sync_file_range: recorded, gives no durability
};

#define MAX_FD 65536
static unsigned char tracked[MAX_FD]; // 1 file under PL_DIR, 2 PL_DIR itself
static char dir[4096];
static size_t dir_len;
static int trace_fd = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_creat64)(const char *, mode_t);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);
static int (*real_sync_file_range)(int, off64_t, off64_t, unsigned int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

static void init(void) {
    RESOLVE(open); RESOLVE(open64); RESOLVE(openat); RESOLVE(openat64);
    RESOLVE(creat); RESOLVE(creat64); RESOLVE(close); RESOLVE(write);
    RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(writev); RESOLVE(pwritev);
    RESOLVE(pwritev64); RESOLVE(fsync); RESOLVE(fdatasync); RESOLVE(ftruncate);
    RESOLVE(ftruncate64); RESOLVE(fallocate); RESOLVE(fallocate64);
    RESOLVE(posix_fallocate); RESOLVE(posix_fallocate64); RESOLVE(sync_file_range);
    RESOLVE(rename); RESOLVE(renameat); RESOLVE(renameat2); RESOLVE(unlink);
    RESOLVE(unlinkat);
    const char *d = getenv("PL_DIR");
    const char *t = getenv("PL_TRACE");
    if (!d || !t || !real_open || !real_writev) return;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof dir) return;
    memcpy(dir, d, n);
    dir[n] = 0;
    dir_len = n;
    trace_fd = real_open(t, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

__attribute__((constructor)) static void ctor(void) { pthread_once(&once, init); }

static void ensure(void) { pthread_once(&once, init); }

static void fatal(const char *what) {
    // The trace is useless once a record is missing: stop loudly.
    static const char msg[] = "power-loss shim: cannot append to the trace: ";
    (void)!real_write(2, msg, sizeof msg - 1);
    (void)!real_write(2, what, strlen(what));
    (void)!real_write(2, "\n", 1);
    abort();
}

struct hdr {
    uint32_t len, type, tid;
    int32_t fd;
    uint64_t a, b;
};

static void emit(uint32_t type, int fd, uint64_t a, uint64_t b, const void *p1, size_t n1, const void *p2, size_t n2) {
    if (trace_fd < 0) return;
    int saved = errno;
    struct hdr h = {(uint32_t)(sizeof h + n1 + n2), type, (uint32_t)syscall(SYS_gettid), fd, a, b};
    struct iovec iov[3] = {{&h, sizeof h}, {(void *)p1, n1}, {(void *)p2, n2}};
    size_t want = h.len;
    ssize_t r;
    do {
        r = real_writev(trace_fd, iov, 3);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)want) fatal(r < 0 ? strerror(errno) : "short write");
    errno = saved;
}

// The part of `path` after PL_DIR ("" for PL_DIR itself), or NULL.
static const char *under(const char *path) {
    if (!path || dir_len == 0) return NULL;
    if (strncmp(path, dir, dir_len) != 0) return NULL;
    if (path[dir_len] == 0) return path + dir_len;
    if (path[dir_len] == '/') return path + dir_len + 1;
    return NULL;
}

// Resolves (dirfd, path) of an *at call into the part after PL_DIR.
static const char *under_at(int dirfd, const char *path, char *buf, size_t cap) {
    if (!path) return NULL;
    if (path[0] == '/' || dirfd == AT_FDCWD) return under(path);
    if (dirfd >= 0 && dirfd < MAX_FD && tracked[dirfd] == 2) {
        if (strlen(path) >= cap) return NULL;
        strcpy(buf, path);
        return buf;
    }
    return NULL;
}

static void opened(int fd, int flags, const char *rel) {
    if (fd < 0 || fd >= MAX_FD || !rel) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    tracked[fd] = S_ISDIR(st.st_mode) ? 2 : 1;
    emit(T_OPEN, fd, (uint64_t)(unsigned)flags, (uint64_t)st.st_ino, rel, strlen(rel), NULL, 0);
}

static int is_tracked(int fd) { return fd >= 0 && fd < MAX_FD && tracked[fd]; }

#define MODE_ARG(flags, mode)                                      \
    mode_t mode = 0;                                               \
    if ((flags) & (O_CREAT | __O_TMPFILE)) {                       \
        va_list ap;                                                \
        va_start(ap, flags);                                       \
        mode = (mode_t)va_arg(ap, int);                            \
        va_end(ap);                                                \
    }

int open(const char *path, int flags, ...) {
    ensure();
    MODE_ARG(flags, mode);
    int fd = real_open(path, flags, mode);
    if (fd >= 0) opened(fd, flags, under(path));
    return fd;
}

int open64(const char *path, int flags, ...) {
    ensure();
    MODE_ARG(flags, mode);
    int fd = (real_open64 ? real_open64 : real_open)(path, flags, mode);
    if (fd >= 0) opened(fd, flags, under(path));
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...) {
    ensure();
    MODE_ARG(flags, mode);
    int fd = real_openat(dirfd, path, flags, mode);
    char buf[4096];
    if (fd >= 0) opened(fd, flags, under_at(dirfd, path, buf, sizeof buf));
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
    ensure();
    MODE_ARG(flags, mode);
    int fd = (real_openat64 ? real_openat64 : real_openat)(dirfd, path, flags, mode);
    char buf[4096];
    if (fd >= 0) opened(fd, flags, under_at(dirfd, path, buf, sizeof buf));
    return fd;
}

int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) { return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

int close(int fd) {
    ensure();
    if (is_tracked(fd)) {
        emit(T_CLOSE, fd, 0, 0, NULL, 0, NULL, 0);
        tracked[fd] = 0;
    }
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
    ensure();
    if (!is_tracked(fd)) return real_write(fd, buf, n);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_write(fd, buf, n);
    if (r > 0) emit(T_WRITE, fd, (uint64_t)off, 0, buf, (size_t)r, NULL, 0);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    ensure();
    ssize_t r = real_pwrite(fd, buf, n, off);
    if (r > 0 && is_tracked(fd)) emit(T_WRITE, fd, (uint64_t)off, 0, buf, (size_t)r, NULL, 0);
    return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    ensure();
    ssize_t r = (real_pwrite64 ? real_pwrite64 : (ssize_t(*)(int, const void *, size_t, off64_t))real_pwrite)(fd, buf, n, off);
    if (r > 0 && is_tracked(fd)) emit(T_WRITE, fd, (uint64_t)off, 0, buf, (size_t)r, NULL, 0);
    return r;
}

// Vectored writes are recorded as one write per buffer, at consecutive
// offsets, covering the bytes the call reports written.
static void emit_iov(int fd, uint64_t off, const struct iovec *iov, int cnt, ssize_t r) {
    size_t left = (size_t)r;
    for (int i = 0; i < cnt && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
        if (n) emit(T_WRITE, fd, off, 0, iov[i].iov_base, n, NULL, 0);
        off += n;
        left -= n;
    }
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    ensure();
    if (!is_tracked(fd)) return real_writev(fd, iov, cnt);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_writev(fd, iov, cnt);
    if (r > 0) emit_iov(fd, (uint64_t)off, iov, cnt, r);
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    ensure();
    ssize_t r = real_pwritev(fd, iov, cnt, off);
    if (r > 0 && is_tracked(fd)) emit_iov(fd, (uint64_t)off, iov, cnt, r);
    return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    ensure();
    ssize_t r = (real_pwritev64 ? real_pwritev64 : (ssize_t(*)(int, const struct iovec *, int, off64_t))real_pwritev)(fd, iov, cnt, off);
    if (r > 0 && is_tracked(fd)) emit_iov(fd, (uint64_t)off, iov, cnt, r);
    return r;
}

static int do_sync(int fd, int data_only) {
    ensure();
    int (*f)(int) = data_only ? real_fdatasync : real_fsync;
    if (!is_tracked(fd)) return f(fd);
    struct stat st;
    uint64_t size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    emit(T_SYNC_BEGIN, fd, (uint64_t)data_only, size, NULL, 0, NULL, 0);
    int r = f(fd);
    if (r == 0) emit(T_SYNC_END, fd, (uint64_t)data_only, 0, NULL, 0, NULL, 0);
    return r;
}

int fsync(int fd) { return do_sync(fd, 0); }
int fdatasync(int fd) { return do_sync(fd, 1); }

int ftruncate(int fd, off_t len) {
    ensure();
    int r = real_ftruncate(fd, len);
    if (r == 0 && is_tracked(fd)) emit(T_TRUNC, fd, (uint64_t)len, 0, NULL, 0, NULL, 0);
    return r;
}

int ftruncate64(int fd, off64_t len) {
    ensure();
    int r = (real_ftruncate64 ? real_ftruncate64 : (int (*)(int, off64_t))real_ftruncate)(fd, len);
    if (r == 0 && is_tracked(fd)) emit(T_TRUNC, fd, (uint64_t)len, 0, NULL, 0, NULL, 0);
    return r;
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    ensure();
    int r = real_fallocate(fd, mode, off, len);
    if (r == 0 && is_tracked(fd)) emit(T_FALLOC, fd, (uint64_t)off, (uint64_t)len | ((uint64_t)mode << 56), NULL, 0, NULL, 0);
    return r;
}

int fallocate64(int fd, int mode, off64_t off, off64_t len) {
    ensure();
    int r = (real_fallocate64 ? real_fallocate64 : (int (*)(int, int, off64_t, off64_t))real_fallocate)(fd, mode, off, len);
    if (r == 0 && is_tracked(fd)) emit(T_FALLOC, fd, (uint64_t)off, (uint64_t)len | ((uint64_t)mode << 56), NULL, 0, NULL, 0);
    return r;
}

int posix_fallocate(int fd, off_t off, off_t len) {
    ensure();
    int r = real_posix_fallocate(fd, off, len);
    if (r == 0 && is_tracked(fd)) emit(T_FALLOC, fd, (uint64_t)off, (uint64_t)len, NULL, 0, NULL, 0);
    return r;
}

int posix_fallocate64(int fd, off64_t off, off64_t len) {
    ensure();
    int r = (real_posix_fallocate64 ? real_posix_fallocate64 : (int (*)(int, off64_t, off64_t))real_posix_fallocate)(fd, off, len);
    if (r == 0 && is_tracked(fd)) emit(T_FALLOC, fd, (uint64_t)off, (uint64_t)len, NULL, 0, NULL, 0);
    return r;
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
    ensure();
    int r = real_sync_file_range(fd, off, n, flags);
    if (r == 0 && is_tracked(fd)) emit(T_SFR, fd, (uint64_t)off, (uint64_t)n, NULL, 0, NULL, 0);
    return r;
}

static void emit_rename(const char *from, const char *to) {
    // A rename into or out of PL_DIR is recorded as an unlink or not at all;
    // shortd renames only inside it.
    if (from && to) emit(T_RENAME, -1, strlen(from), 0, from, strlen(from), to, strlen(to));
    else if (from) emit(T_UNLINK, -1, 0, 0, from, strlen(from), NULL, 0);
}

int rename(const char *from, const char *to) {
    ensure();
    int r = real_rename(from, to);
    if (r == 0) emit_rename(under(from), under(to));
    return r;
}

int renameat(int fd1, const char *from, int fd2, const char *to) {
    ensure();
    int r = real_renameat(fd1, from, fd2, to);
    char b1[4096], b2[4096];
    if (r == 0) emit_rename(under_at(fd1, from, b1, sizeof b1), under_at(fd2, to, b2, sizeof b2));
    return r;
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned int flags) {
    ensure();
    int r = real_renameat2(fd1, from, fd2, to, flags);
    char b1[4096], b2[4096];
    if (r == 0) emit_rename(under_at(fd1, from, b1, sizeof b1), under_at(fd2, to, b2, sizeof b2));
    return r;
}

int unlink(const char *path) {
    ensure();
    int r = real_unlink(path);
    const char *rel = under(path);
    if (r == 0 && rel) emit(T_UNLINK, -1, 0, 0, rel, strlen(rel), NULL, 0);
    return r;
}

int unlinkat(int dirfd, const char *path, int flags) {
    ensure();
    int r = real_unlinkat(dirfd, path, flags);
    char buf[4096];
    const char *rel = under_at(dirfd, path, buf, sizeof buf);
    if (r == 0 && rel) emit(T_UNLINK, -1, (uint64_t)flags, 0, rel, strlen(rel), NULL, 0);
    return r;
}
