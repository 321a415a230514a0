/* keys.c — the (quota, key) table; see keys.h. */
#include "keys.h"

#include "mem.h"

uint32_t tg__table_slots(uint32_t max_keys)
{
    if (max_keys > TG__MAX_SLOTS)
        return 0;
    uint32_t n = TG__PROBE;
    while (n < max_keys)
        n <<= 1;
    return n;
}

size_t tg__table_bytes(uint32_t n)
{
    return (size_t)n * (sizeof(tg__entry) + TG__TOKEN_CAP) +
           TG__SPILL * sizeof(tg__spilled);
}

void tg__table_init(tg__table *t, void *mem, uint32_t n)
{
    tg__entry *slots = mem;
    t->slot = slots;
    t->spill = (tg__spilled *)(slots + n);
    t->n_spill = 0;
    t->tokens = (char *)(t->spill + TG__SPILL);
    t->mask = n - 1;
    t->probe = n < TG__PROBE ? n : TG__PROBE;
    t->used = 0;
    t->wants = 0;
    for (uint32_t i = 0; i < n; i++) {
        slots[i].quota = TG__NO_QUOTA;
        slots[i].flags = 0;
    }
}

/* FNV-1a with a final avalanche (murmur3's fmix32), so the low bits that
 * pick the home slot depend on every input byte. Not keyed: a client who
 * can choose many keys can at worst crowd one probe window, which costs it
 * evictions of its own entries, not CPU. */
uint32_t tg__key_hash(tg_str quota_name, tg_str key)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < quota_name.len; i++)
        h = (h ^ (uint8_t)quota_name.p[i]) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ (uint8_t)key.p[i]) * 16777619u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

char *tg__entry_token(const tg__table *t, const tg__entry *en)
{
    return t->tokens + (size_t)(en - t->slot) * TG__TOKEN_CAP;
}

tg__entry *tg__table_find(const tg__table *t, uint32_t hash, unsigned quota,
                          tg_str key)
{
    for (uint32_t i = 0; i < t->probe; i++) {
        tg__entry *en = &t->slot[(hash + i) & t->mask];
        if (en->quota == quota && en->hash == hash &&
            tg__bytes_eq(en->key, en->key_len, key.p, key.len))
            return en;
    }
    return NULL;
}

static bool evictable(const tg__table *t, const tg__entry *en)
{
    if ((en->flags & (TG__F_BATCH | TG__F_BUSY)) ||
        (en->c.infl[0] | en->c.infl[1] | en->c.infl[2]))
        return false;
    return t->n_spill < TG__SPILL || !tg__counts_pending(&en->c);
}

static void spill(tg__table *t, const tg__entry *en)
{
    tg__spilled *s = &t->spill[t->n_spill++];
    s->c = en->c;
    s->quota = en->quota;
    s->key_len = en->key_len;
    s->batch = 0;
    tg__memcpy(s->key, en->key, en->key_len);
}

/* Eviction prefers, among evictable entries, those without a coordinator
 * action in force (evicting a blocked key would hand it a fresh floor),
 * then the least recently used. A victim with pending counts leaves them
 * in the spill list. */
tg__entry *tg__table_insert(tg__table *t, uint32_t hash, unsigned quota,
                            tg_str key, uint64_t now_ms)
{
    tg__entry *pick = NULL;
    bool pick_blocked = true;
    if (key.len > TG__KEY_CAP)
        return NULL;
    for (uint32_t i = 0; i < t->probe; i++) {
        tg__entry *en = &t->slot[(hash + i) & t->mask];
        if (en->quota == TG__NO_QUOTA) {
            pick = en;
            break;
        }
        if (!evictable(t, en))
            continue;
        int v = tg__bucket_verdict(&en->b, now_ms);
        bool blocked = v == TG__V_BLOCKED || v == TG__V_CHALLENGE;
        if (!pick || (pick_blocked && !blocked) ||
            (pick_blocked == blocked &&
             en->last_used_ms < pick->last_used_ms)) {
            pick = en;
            pick_blocked = blocked;
        }
    }
    if (!pick)
        return NULL;
    if (pick->quota != TG__NO_QUOTA) {
        if (tg__counts_pending(&pick->c))
            spill(t, pick);
        tg__table_remove(t, pick);
    }
    tg__memset(pick, 0, offsetof(tg__entry, key));
    pick->hash = hash;
    pick->quota = (uint8_t)quota;
    pick->key_len = (uint8_t)key.len;
    pick->last_used_ms = now_ms;
    tg__memcpy(pick->key, key.p, key.len);
    t->used++;
    return pick;
}

void tg__table_remove(tg__table *t, tg__entry *en)
{
    tg__entry_want(t, en, false);
    en->quota = TG__NO_QUOTA;
    en->flags = 0;
    t->used--;
}

void tg__spill_compact(tg__table *t)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < t->n_spill; i++) {
        const tg__spilled *s = &t->spill[i];
        if (s->quota == TG__NO_QUOTA ||
            (!s->batch && !tg__counts_unacked(&s->c)))
            continue;
        if (k != i)
            t->spill[k] = *s;
        k++;
    }
    t->n_spill = k;
}

void tg__entry_want(tg__table *t, tg__entry *en, bool want)
{
    if (want && !(en->flags & TG__F_WANT)) {
        en->flags |= TG__F_WANT;
        t->wants++;
    } else if (!want && (en->flags & TG__F_WANT)) {
        en->flags &= (uint8_t)~TG__F_WANT;
        t->wants--;
    }
}

bool tg__counts_pending(const tg__counts *c)
{
    return (c->pend[0] | c->pend[1] | c->pend[2]) != 0;
}

bool tg__counts_unacked(const tg__counts *c)
{
    return tg__counts_pending(c) || (c->infl[0] | c->infl[1] | c->infl[2]) != 0;
}

void tg__counts_freeze(tg__counts *c)
{
    for (int i = 0; i < TG__C_N; i++) {
        c->infl[i] += c->pend[i];
        c->pend[i] = 0;
    }
}

void tg__counts_ack(tg__counts *c)
{
    for (int i = 0; i < TG__C_N; i++)
        c->infl[i] = 0;
}
