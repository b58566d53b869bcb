/* nbdkit-raid: opening members (contract: member.h).
 *
 * member_open chooses the backend for a spec (an NBD URI, else a path; a
 * test's open hook first), and the custom backend of the tests lives here.
 * The fork handlers are registered here too, before the first member is
 * opened: they are the one place that knows every backend with threads.
 * Everything else — the parallel I/O engine and what the backends share —
 * is member-io.c's, below every backend.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "member-io.h"
#include "util.h"

/* ---- fork ---- */

static void
member_atfork_child (void)
{
  mio_atfork_child ();
  member_nbd_atfork_child ();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
atfork_register (void)
{
  pthread_atfork (member_nbd_atfork_prepare, member_nbd_atfork_parent,
                  member_atfork_child);
}

/* ---- opening ---- */

bool
member_spec_is_nbd (const char *spec)
{
  static const char *const schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
  };

  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    if (strncmp (spec, schemes[i], strlen (schemes[i])) == 0)
      return true;
  return false;
}

static member_open_hook_fn open_hook;

void
member_set_open_hook (member_open_hook_fn fn)
{
  open_hook = fn;
}

struct member *
member_open (const char *spec, enum member_access access, char *err, size_t errlen)
{
  struct member *m;

  if (open_hook && spec && (m = open_hook (spec)) != NULL)
    return m;
  if (spec == NULL || *spec == '\0') {
    member_err (err, errlen, "\"\"", "member spec", EINVAL);
    errno = EINVAL;
    return NULL;
  }
  pthread_once (&atfork_once, atfork_register);
  if (member_spec_is_nbd (spec))
    return member_nbd_open (spec, access != MEMBER_READ_WRITE, err, errlen);
  return member_file_open (spec, access, err, errlen);
}

/* ---- custom (test) backend: synchronous, in the calling thread ---- */

struct custom_member {
  struct member m;
  struct member_custom_ops ops;
  void *priv;
};

static int
custom_zero (struct custom_member *cm, uint64_t len, uint64_t off, bool fua)
{
  const void *z = member_zeroes ();

  if (cm->ops.zero)
    return cm->ops.zero (cm->priv, len, off, fua);
  if (z == NULL)
    return ENOMEM;
  while (len > 0) {
    size_t n = raid_min_u64 (len, MEMBER_ZERO_BUF_SIZE);
    int r = cm->ops.pwrite (cm->priv, z, n, off, fua);
    if (r)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

/* One backend call per iov element, at increasing offsets. */
static int
custom_run (struct member *m, struct mio *io)
{
  struct custom_member *cm = (struct custom_member *) m;
  bool fua = io->flags & MIO_FUA;
  uint64_t off = io->off;
  int r = 0;

  switch (io->op) {
  case MIO_FLUSH:
    return cm->ops.flush (cm->priv);
  case MIO_ZERO:
    return custom_zero (cm, io->len, io->off, fua);
  case MIO_READ:
  case MIO_WRITE:
    for (int i = 0; i < io->iovcnt && r == 0; i++) {
      if (io->iov[i].iov_len == 0)
        continue;
      if (io->op == MIO_READ)
        r = cm->ops.pread (cm->priv, io->iov[i].iov_base, io->iov[i].iov_len, off);
      else
        r = cm->ops.pwrite (cm->priv, io->iov[i].iov_base, io->iov[i].iov_len,
                            off, fua);
      off += io->iov[i].iov_len;
    }
    return r;
  }
  return EINVAL;
}

static void
custom_close (struct member *m)
{
  struct custom_member *cm = (struct custom_member *) m;

  if (cm->ops.close)
    cm->ops.close (cm->priv);
  member_fini (m);
  free (cm);
}

static const struct member_backend custom_backend = {
  .kind = MEMBER_CUSTOM,
  .run = custom_run,
  .close = custom_close,
};

struct member *
member_new_custom (const char *name, uint64_t size,
                   const struct member_custom_ops *ops, void *priv)
{
  struct custom_member *cm;

  if (ops == NULL || !ops->pread || !ops->pwrite || !ops->flush) {
    errno = EINVAL;
    return NULL;
  }
  pthread_once (&atfork_once, atfork_register);
  cm = calloc (1, sizeof *cm);
  if (cm == NULL)
    return NULL;
  if (member_init (&cm->m, &custom_backend, name ? name : "custom", size,
                   true, false)) {
    free (cm);
    errno = ENOMEM;
    return NULL;
  }
  cm->ops = *ops;
  cm->priv = priv;
  return &cm->m;
}

