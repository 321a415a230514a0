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

/* Splits line[0..n) at blanks (space, tab, CR) into at most max fields:
 * their count, or max + 1 when the line holds more. The key file and the
 * admin tokens file are lines of such fields. */
size_t co_split_fields(const char *line, size_t n, const char **f, size_t *fl,
                     size_t max)
{
    size_t nf = 0, i = 0;

    while (i < n) {
        size_t j;

        while (i < n && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i >= n)
            break;
        j = i;
        while (j < n && line[j] != ' ' && line[j] != '\t' && line[j] != '\r')
            j++;
        if (nf == max)
            return max + 1;
        f[nf] = line + i;
        fl[nf++] = j - i;
        i = j;
    }
    return nf;
}
