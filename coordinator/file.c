/* file.c — reading the small files tollgated is configured from (policy,
 * key file, admin tokens): whole, with a size cap, and telling the caller
 * whether group or others could read it (secrets want chmod 600). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tollgated.h"

/* Read the whole file at path (at most max bytes) for a --*-FILE flag.
 * *buf is malloc'd and NUL-terminated (the caller frees it, cleansing it
 * first if it held secrets); *exposed says group or others may read it.
 * Returns 0, or CO_EIO / CO_ETOOBIG / CO_ENOMEM with err. */
int co_file_read(const char *path, size_t max, char **buf, size_t *len,
                 bool *exposed, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    int rc = CO_EIO;

    *buf = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return CO_EIO;
    }
    if (fstat(fileno(f), &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        goto done;
    }
    if ((size_t)st.st_size > max) {
        snprintf(err, errlen, "larger than %zu bytes", max);
        rc = CO_ETOOBIG;
        goto done;
    }
    *exposed = (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
    *buf = malloc((size_t)st.st_size + 1);
    if (*buf == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = CO_ENOMEM;
        goto done;
    }
    *len = fread(*buf, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read: %s", strerror(errno));
        free(*buf);
        *buf = NULL;
        goto done;
    }
    (*buf)[*len] = '\0';
    rc = CO_OK;
done:
    fclose(f);
    return rc;
}
