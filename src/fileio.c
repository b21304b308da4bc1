/* File handling shared by the library and the tool (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(int code, char *err, size_t err_size, const char *what)
{
    if (err && err_size) snprintf(err, err_size, "%s", what);
    return code;
}

static const char *kind_of(mode_t mode)
{
    if (S_ISDIR(mode)) return "is a directory";
    if (S_ISFIFO(mode)) return "is a FIFO, not a regular file";
    if (S_ISCHR(mode)) return "is a character device, not a regular file";
    if (S_ISBLK(mode)) return "is a block device, not a regular file";
    if (S_ISSOCK(mode)) return "is a socket, not a regular file";
    return "is not a regular file";
}

/* read() until n bytes or end of file; EINTR is retried. */
static size_t read_full(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

int fasa__read_whole_file(const char *path, size_t max_size, const fasa__file_alloc *alloc, char **data,
                          size_t *size, char *err, size_t err_size)
{
    *data = NULL;
    *size = 0;
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return fail(e, err, err_size, e == ENOENT ? "no such file" : strerror(e));
    }
    struct stat st;
    int code = 0;
    char reason[96] = "";
    if (fstat(fd, &st) != 0) code = errno, snprintf(reason, sizeof reason, "%s", strerror(code));
    else if (!S_ISREG(st.st_mode))
        code = S_ISDIR(st.st_mode) ? EISDIR : EINVAL, snprintf(reason, sizeof reason, "%s", kind_of(st.st_mode));
    else if ((uint64_t)st.st_size > max_size)
        code = EFBIG, snprintf(reason, sizeof reason, "is %.1f MiB, more than the %.1f MiB limit",
                               (double)st.st_size / 1048576.0, (double)max_size / 1048576.0);
    char *buf = NULL;
    size_t n = code ? 0 : (size_t)st.st_size;
    if (!code) {
        buf = alloc ? alloc->alloc(alloc->user, n + 1) : malloc(n + 1);
        if (!buf) code = ENOMEM, snprintf(reason, sizeof reason, "out of host memory for %zu bytes", n + 1);
    }
    /* A regular file may still change under us: read exactly its size and
     * insist that nothing follows, so the buffer and *size always agree. */
    char extra;
    if (!code && (read_full(fd, buf, n) != n || read_full(fd, &extra, 1) != 0))
        code = EIO, snprintf(reason, sizeof reason, "changed size while being read");
    close(fd);
    if (code) {
        if (buf && alloc) alloc->free(alloc->user, buf);
        else free(buf);
        return fail(code, err, err_size, reason);
    }
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return 0;
}

int fasa__atomic_begin(fasa__atomic_file *af, const char *path, char *err, size_t err_size)
{
    static atomic_uint serial;
    memset(af, 0, sizeof *af);
    if (!path || !*path) return fail(EINVAL, err, err_size, "empty path");
    if (strlen(path) >= sizeof af->target) return fail(ENAMETOOLONG, err, err_size, strerror(ENAMETOOLONG));
    snprintf(af->target, sizeof af->target, "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        /* replace the file the link points to, keeping the link */
        char *real = realpath(path, NULL);
        if (real && strlen(real) < sizeof af->target) snprintf(af->target, sizeof af->target, "%s", real);
        free(real);
    }
    if (stat(af->target, &st) == 0) {
        if (!S_ISREG(st.st_mode)) return fail(S_ISDIR(st.st_mode) ? EISDIR : EINVAL, err, err_size, kind_of(st.st_mode));
        af->replaced = true;
    }
    char dir_buf[sizeof af->target], base_buf[sizeof af->target];
    snprintf(dir_buf, sizeof dir_buf, "%s", af->target);
    snprintf(base_buf, sizeof base_buf, "%s", af->target);
    const char *dir = dirname(dir_buf), *base = basename(base_buf);
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned id = atomic_fetch_add(&serial, 1);
        int len = snprintf(af->tmp, sizeof af->tmp, "%s/.%s.tmp-%ld-%u", dir, base, (long)getpid(), id);
        if (len < 0 || (size_t)len >= sizeof af->tmp) return fail(ENAMETOOLONG, err, err_size, strerror(ENAMETOOLONG));
        int fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd < 0) {
            int e = errno;
            af->tmp[0] = '\0';
            return fail(e, err, err_size, strerror(e));
        }
        if (af->replaced) fchmod(fd, st.st_mode & 07777);   /* keep the old file's permissions */
        af->f = fdopen(fd, "wb");
        if (!af->f) {
            int e = errno;
            close(fd);
            fasa__atomic_abort(af);
            return fail(e, err, err_size, strerror(e));
        }
        return 0;
    }
    af->tmp[0] = '\0';
    return fail(EEXIST, err, err_size, "cannot create a temporary file next to it");
}

void fasa__atomic_abort(fasa__atomic_file *af)
{
    if (af->f) fclose(af->f);
    af->f = NULL;
    if (af->tmp[0]) unlink(af->tmp);
    af->tmp[0] = '\0';
}

int fasa__atomic_commit(fasa__atomic_file *af, char *err, size_t err_size)
{
    if (!af->f) return fail(EBADF, err, err_size, "no file is open");
    int code = 0;
    if (fflush(af->f) != 0 || ferror(af->f)) code = errno ? errno : EIO;
    else if (fsync(fileno(af->f)) != 0) code = errno;
    if (fclose(af->f) != 0 && !code) code = errno ? errno : EIO;
    af->f = NULL;
    if (!code && rename(af->tmp, af->target) != 0) code = errno;
    if (code) {
        fasa__atomic_abort(af);
        return fail(code, err, err_size, strerror(code));
    }
    af->tmp[0] = '\0';
    /* the rename itself is durable only once the directory is synced */
    char dir_buf[sizeof af->target];
    snprintf(dir_buf, sizeof dir_buf, "%s", af->target);
    int dfd = open(dirname(dir_buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int fasa__write_whole_file(const char *path, const void *data, size_t size, char *err, size_t err_size)
{
    fasa__atomic_file af;
    int code = fasa__atomic_begin(&af, path, err, err_size);
    if (code) return code;
    if (size && fwrite(data, 1, size, af.f) != size) {
        code = errno ? errno : EIO;
        fasa__atomic_abort(&af);
        return fail(code, err, err_size, strerror(code));
    }
    return fasa__atomic_commit(&af, err, err_size);
}

bool fasa__same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0) return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
