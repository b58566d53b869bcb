/* nbdkit-raid: the degraded row cache (theory in rowcache.h). */
#include <stdlib.h>
#include <string.h>

#include "rowcache.h"

void
rowcache_init (struct rowcache *c)
{
  memset (c, 0, sizeof *c);
  pthread_mutex_init (&c->lock, NULL);
}

/* Give an entry's memory back (lock held). */
static void
drop (struct rowcache *c, struct rowcache_entry *x)
{
  c->bytes -= x->cap;
  x->used = false;
  free (x->buf);
  x->buf = NULL;
  x->cap = 0;
}

void
rowcache_fini (struct rowcache *c)
{
  for (int i = 0; i < ROWCACHE_ENTRIES; i++)
    drop (c, &c->e[i]);
  pthread_mutex_destroy (&c->lock);
}

static uint64_t
row_bytes (const struct layout *L)
{
  return (uint64_t) L->g.data_disks * L->g.chunk;
}

bool
rowcache_fits (const struct layout *L)
{
  return L->g.level >= 4 && row_bytes (L) <= ROWCACHE_ROW_MAX;
}

void
rowcache_bump (struct rowcache *c)
{
  atomic_fetch_add (&c->epoch, 1);
}

bool
rowcache_stream (struct rowcache *c, uint64_t off, uint64_t end)
{
  bool cont = false;

  for (int i = 0; i < ROWCACHE_RECENT && off; i++)
    cont |= atomic_load_explicit (&c->recent[i], memory_order_relaxed) == off;
  atomic_store_explicit (&c->recent[atomic_fetch_add (&c->recent_next, 1) % ROWCACHE_RECENT],
                         end, memory_order_relaxed);
  return cont;
}


uint64_t
rowcache_epoch (struct rowcache *c)
{
  return atomic_load (&c->epoch);
}

/* R3: the same mapping of row bytes to member bytes. */
static bool
same_layout (const struct rowcache_entry *x, const struct layout *L)
{
  return x->id == L->id && x->g.level == L->g.level && x->g.layout == L->g.layout &&
    x->g.chunk == L->g.chunk && x->g.raid_disks == L->g.raid_disks &&
    x->g.data_disks == L->g.data_disks &&
    memcmp (x->data_offset, L->data_offset,
            (size_t) L->g.raid_disks * sizeof x->data_offset[0]) == 0;
}

bool
rowcache_take (struct rowcache *c, const struct layout *L, uint64_t row,
               uint64_t s, uint64_t e, uint8_t *dst)
{
  bool hit = false;

  if (!rowcache_fits (L) || e > row_bytes (L) || s >= e)
    return false;
  pthread_mutex_lock (&c->lock);
  for (int i = 0; i < ROWCACHE_ENTRIES; i++) {
    struct rowcache_entry *x = &c->e[i];
    if (!x->used || x->row != row || !same_layout (x, L))
      continue;
    if (x->epoch == atomic_load (&c->epoch)) {
      memcpy (dst, x->buf + s, e - s);
      hit = true;
    }
    else
      drop (c, x);                         /* stale for good: the epoch only grows */
    break;
  }
  pthread_mutex_unlock (&c->lock);
  return hit;
}

/* The oldest entry in use other than `but`, or NULL (lock held). */
static struct rowcache_entry *
oldest (struct rowcache *c, const struct rowcache_entry *but)
{
  struct rowcache_entry *v = NULL;

  for (int i = 0; i < ROWCACHE_ENTRIES; i++)
    if (c->e[i].used && &c->e[i] != but && (!v || c->e[i].born < v->born))
      v = &c->e[i];
  return v;
}

/* An entry for a row of n bytes with its buffer, taking the memory of the
 * oldest entries while the budget needs it; NULL when out of memory (lock
 * held). */
static struct rowcache_entry *
make_room (struct rowcache *c, uint64_t n)
{
  struct rowcache_entry *x = NULL, *o;

  for (int i = 0; i < ROWCACHE_ENTRIES && !x; i++)
    if (!c->e[i].used)
      x = &c->e[i];
  if (!x)
    x = oldest (c, NULL);
  if (x->cap != n)
    drop (c, x);                           /* a buffer of another size */
  x->used = false;
  if (x->cap == n)
    return x;
  while (c->bytes + n > ROWCACHE_BYTES && (o = oldest (c, x)))
    drop (c, o);
  if (!(x->buf = malloc (n)))
    return NULL;
  x->cap = n;
  c->bytes += n;
  return x;
}

void
rowcache_put (struct rowcache *c, const struct layout *L, uint64_t row,
              uint64_t epoch, uint8_t *const *blk)
{
  uint64_t n = row_bytes (L);
  struct rowcache_entry *x;

  if (!rowcache_fits (L))
    return;
  pthread_mutex_lock (&c->lock);
  if (epoch != atomic_load (&c->epoch))    /* R1: a write moved it */
    goto out;
  for (int i = 0; i < ROWCACHE_ENTRIES; i++)
    if (c->e[i].used && c->e[i].row == row && same_layout (&c->e[i], L))
      drop (c, &c->e[i]);                  /* replaced below */
  if (!(x = make_room (c, n)))
    goto out;
  for (int di = 0; di < (int) L->g.data_disks; di++)
    memcpy (x->buf + (uint64_t) di * L->g.chunk, blk[di], L->g.chunk);
  x->used = true;
  x->id = L->id;
  x->g = L->g;
  memcpy (x->data_offset, L->data_offset, sizeof x->data_offset);
  x->row = row;
  x->epoch = epoch;
  x->born = ++c->stores;
 out:
  pthread_mutex_unlock (&c->lock);
}
