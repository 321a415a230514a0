/* input.c — the rule every string from outside obeys: no NUL byte.
 *
 * The coordinator keeps edge ids, quota names and rate-limit keys as C
 * strings, so a NUL inside one would silently cut it short: "a\0b" would
 * count as edge "a", or as key "a" of someone else. protobuf-c hands
 * strings over NUL-terminated without their length, so the check runs on
 * the wire bytes, before they are unpacked, for every string field the
 * message's descriptor names (nested messages included). JSON bodies need
 * no check here: jansson refuses "\u0000" unless told JSON_ALLOW_NUL, and
 * the router refuses "%00" in a path (http.c).
 */
#include <stdio.h>
#include <string.h>

#include "tollgated.h"

/* Deepest message nesting walked; SyncRequest needs 2. */
#define PB_DEPTH_MAX 8
/* Fields whose occurrences are numbered in the detail ("counts[3]"). */
#define PB_FIELDS_MAX 32

int co_input_text(const char *field, const void *s, size_t len,
                  char *detail, size_t detaillen)
{
    if (memchr(s, '\0', len) == NULL)
        return CO_OK;
    snprintf(detail, detaillen, "%s: holds a NUL byte", field);
    return CO_EINVAL;
}

int co_pb_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= len)
            return CO_EINVAL;
        *v |= (uint64_t)(p[*i] & 0x7f) << shift;
        if ((p[(*i)++] & 0x80) == 0)
            return CO_OK;
    }
    return CO_EINVAL;
}

static int pb_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                   size_t len, const char *prefix, unsigned depth,
                   char *detail, size_t detaillen)
{
    unsigned seen[PB_FIELDS_MAX] = {0};
    size_t i = 0;

    if (depth > PB_DEPTH_MAX) {
        snprintf(detail, detaillen, "%s: nested too deep", prefix);
        return CO_EINVAL;
    }
    while (i < len) {
        const ProtobufCFieldDescriptor *f;
        uint64_t tag, v;
        char name[160];
        size_t idx;

        if (co_pb_varint(p, len, &i, &tag) != CO_OK)
            goto malformed;
        switch (tag & 7) {
        case 0:
            if (co_pb_varint(p, len, &i, &v) != CO_OK)
                goto malformed;
            continue;
        case 1:
        case 5:
            v = (tag & 7) == 1 ? 8 : 4;
            if (len - i < v)
                goto malformed;
            i += (size_t)v;
            continue;
        case 2:
            break;
        default:
            goto malformed;
        }
        if (co_pb_varint(p, len, &i, &v) != CO_OK || v > len - i)
            goto malformed;
        f = tag >> 3 <= UINT32_MAX
            ? protobuf_c_message_descriptor_get_field(desc,
                                                      (unsigned)(tag >> 3))
            : NULL;
        if (f != NULL && (f->type == PROTOBUF_C_TYPE_STRING ||
                          f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            idx = (size_t)(f - desc->fields);
            if (f->label == PROTOBUF_C_LABEL_REPEATED && idx < PB_FIELDS_MAX)
                snprintf(name, sizeof name, "%s%s%s[%u]", prefix,
                         *prefix ? "." : "", f->name, seen[idx]++);
            else
                snprintf(name, sizeof name, "%s%s%s", prefix,
                         *prefix ? "." : "", f->name);
            if (f->type == PROTOBUF_C_TYPE_STRING
                ? co_input_text(name, p + i, (size_t)v, detail,
                                detaillen) != CO_OK
                : pb_walk(f->descriptor, p + i, (size_t)v, name, depth + 1,
                          detail, detaillen) != CO_OK)
                return CO_EINVAL;
        }
        i += (size_t)v;
    }
    return CO_OK;
malformed:
    snprintf(detail, detaillen, "malformed protobuf%s%s", *prefix ? " in " :
             "", prefix);
    return CO_EINVAL;
}

/* Refuse a protobuf message (wire bytes of type desc) with a NUL in any
 * string field, at any depth. Returns 0, or CO_EINVAL with detail naming
 * the field ("counts[3].key: holds a NUL byte") or saying the bytes do
 * not parse. Costs one pass over the bytes and allocates nothing. */
int co_input_protobuf(const ProtobufCMessageDescriptor *desc,
                      const uint8_t *buf, size_t len, char *detail,
                      size_t detaillen)
{
    return pb_walk(desc, buf, len, "", 0, detail, detaillen);
}
