/* File handling shared by the library and the fasa tool: reading a whole
 * file without ever blocking on a FIFO or a device, replacing a file
 * atomically (temporary file in the same directory, fsync, rename), and
 * telling whether two paths name the same file.  The tool compiles this
 * file into its own helper library, so nothing here may use a context. */
#ifndef FASA_FILEIO_H
#define FASA_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Allocator for fasa__read_whole_file; NULL = malloc/free. */
typedef struct fasa__file_alloc {
    void *(*alloc)(void *user, size_t size);
    void (*free)(void *user, void *ptr);
    void *user;
} fasa__file_alloc;

/* Reads a whole regular file into a new buffer of *size + 1 bytes (a NUL
 * follows the content; the content itself may hold NULs, so use *size).
 * The open never blocks (O_NONBLOCK), and anything but a regular file (a
 * FIFO, a directory, /dev/zero, a socket) is refused before reading, as is
 * a file over max_size bytes.  Returns 0, or an errno value (ENOENT,
 * EISDIR, EINVAL = not a regular file, EFBIG = too large, ENOMEM, EIO) with
 * err holding the reason without the path ("no such file", "is a FIFO, not
 * a regular file", "is 12 MiB, more than the 8 MiB limit"). */
int fasa__read_whole_file(const char *path, size_t max_size, const fasa__file_alloc *alloc, char **data,
                          size_t *size, char *err, size_t err_size);

/* A file being written in place of another: content goes to a temporary
 * file next to the target and replaces it only in fasa__atomic_commit, so
 * the old file stays whole on any failure (full disk, crash, error). */
typedef struct fasa__atomic_file {
    FILE *f;                     /* write the content here */
    bool replaced;               /* the target existed (commit replaces it) */
    char target[4096];           /* the file that commit replaces */
    char tmp[4096 + 64];         /* the temporary file */
} fasa__atomic_file;

/* Creates the temporary file.  An existing target that is not a regular
 * file (a directory, a device, a FIFO) is refused; a symbolic link is
 * followed, so the file it points to is replaced, not the link.  Returns 0
 * or an errno value with the reason in err. */
int fasa__atomic_begin(fasa__atomic_file *af, const char *path, char *err, size_t err_size);
/* Flushes, fsyncs and renames the temporary file over the target, then
 * fsyncs the directory.  On failure the temporary file is removed and the
 * target is untouched.  Returns 0 or an errno value with the reason. */
int fasa__atomic_commit(fasa__atomic_file *af, char *err, size_t err_size);
/* Drops the temporary file (after a failed write); the target is untouched. */
void fasa__atomic_abort(fasa__atomic_file *af);

/* Writes size bytes as the new content of path through the functions above. */
int fasa__write_whole_file(const char *path, const void *data, size_t size, char *err, size_t err_size);

/* True when both paths exist and name the same file (device and inode). */
bool fasa__same_file(const char *a, const char *b);

#endif
