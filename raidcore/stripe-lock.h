/* nbdkit-raid: per-stripe-row locks.
 *
 * Invariant: at most one request holds a given key (layout id, row) at a
 * time.  Writers hold the rows they touch across their whole read / compute
 * / write sequence, so parity is never computed from a half-updated row.
 * Requests lock their rows in ascending key order (stripe_lock_range), so two
 * requests can never wait on each other in a cycle.
 *
 * Waits: a waiter sleeps on its bucket's condition variable and is woken by
 * stripe_unlock_range of the holder (broadcast on that bucket).  The wait is
 * bounded by the holder's own I/O, which itself is bounded (member.h).
 */
#ifndef RAIDCORE_STRIPE_LOCK_H
#define RAIDCORE_STRIPE_LOCK_H

#include <pthread.h>
#include <stdint.h>

#define STRIPE_LOCK_BUCKETS 256

struct stripe_lock_node {
  uint64_t key;
  struct stripe_lock_node *next;
};

struct stripe_lock_bucket {
  pthread_mutex_t lock;
  pthread_cond_t freed;                 /* broadcast by the unlocker */
  struct stripe_lock_node *held;
};

struct stripe_lock_table {
  struct stripe_lock_bucket b[STRIPE_LOCK_BUCKETS];
};

static inline uint64_t
stripe_lock_key (int layout_id, uint64_t row)
{
  return ((uint64_t) layout_id << 62) | row;
}

void stripe_lock_init (struct stripe_lock_table *t);
void stripe_lock_destroy (struct stripe_lock_table *t);

/* Lock keys first, first+1, ... first+n-1 (ascending).  nodes[] must hold n
 * entries and stay valid until the matching unlock. */
void stripe_lock_range (struct stripe_lock_table *t, uint64_t first, size_t n,
                        struct stripe_lock_node *nodes);
void stripe_unlock_range (struct stripe_lock_table *t, size_t n,
                          struct stripe_lock_node *nodes);

#endif
