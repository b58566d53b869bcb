/* nbdkit-raid: per-stripe-row locks (see stripe-lock.h for the invariant). */
#include <stdbool.h>
#include <stddef.h>

#include "stripe-lock.h"

void
stripe_lock_init (struct stripe_lock_table *t)
{
  for (size_t i = 0; i < STRIPE_LOCK_BUCKETS; i++) {
    pthread_mutex_init (&t->b[i].lock, NULL);
    pthread_cond_init (&t->b[i].freed, NULL);
    t->b[i].held = NULL;
  }
}

void
stripe_lock_destroy (struct stripe_lock_table *t)
{
  for (size_t i = 0; i < STRIPE_LOCK_BUCKETS; i++) {
    pthread_mutex_destroy (&t->b[i].lock);
    pthread_cond_destroy (&t->b[i].freed);
  }
}

static struct stripe_lock_bucket *
bucket_of (struct stripe_lock_table *t, uint64_t key)
{
  /* Consecutive rows land in consecutive buckets, so one request's rows
   * rarely share a bucket. */
  return &t->b[(key ^ (key >> 62)) % STRIPE_LOCK_BUCKETS];
}

static bool
is_held (const struct stripe_lock_bucket *b, uint64_t key)
{
  for (const struct stripe_lock_node *n = b->held; n; n = n->next)
    if (n->key == key)
      return true;
  return false;
}

static void
lock_one (struct stripe_lock_table *t, uint64_t key, struct stripe_lock_node *node)
{
  struct stripe_lock_bucket *b = bucket_of (t, key);

  pthread_mutex_lock (&b->lock);
  while (is_held (b, key))
    pthread_cond_wait (&b->freed, &b->lock);   /* woken by unlock_one */
  node->key = key;
  node->next = b->held;
  b->held = node;
  pthread_mutex_unlock (&b->lock);
}

static void
unlock_one (struct stripe_lock_table *t, struct stripe_lock_node *node)
{
  struct stripe_lock_bucket *b = bucket_of (t, node->key);
  struct stripe_lock_node **pp;

  pthread_mutex_lock (&b->lock);
  for (pp = &b->held; *pp != node; pp = &(*pp)->next)
    ;
  *pp = node->next;
  pthread_cond_broadcast (&b->freed);
  pthread_mutex_unlock (&b->lock);
}

void
stripe_lock_range (struct stripe_lock_table *t, uint64_t first, size_t n,
                   struct stripe_lock_node *nodes)
{
  for (size_t i = 0; i < n; i++)
    lock_one (t, first + i, &nodes[i]);
}

void
stripe_unlock_range (struct stripe_lock_table *t, size_t n,
                     struct stripe_lock_node *nodes)
{
  for (size_t i = n; i-- > 0;)
    unlock_one (t, &nodes[i]);
}
