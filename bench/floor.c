/* nbdkit-raid bench: the floor of a RAID5 4 KiB partial write on files.
 *
 * What it measures: how fast a server can go that does nothing for a
 * 4 KiB write but the member system calls the raid plugin's read-modify-
 * write issues, on the same files: read the old data and the old parity
 * (two preadv), with record=true append a write-hole record (a 512-byte
 * header, the new data and the new parity) to the parity member's log
 * with RWF_DSYNC, then write the data and the parity in place (two
 * pwritev2).  There is no stripe lock, no journal logic, no checkpoint,
 * no bitmap: record=false is the bitmap policy's member I/O (its bit
 * writes are rare), record=true the journal's.  run.sh serves it beside
 * the array so that the array's random-write figure can be read against
 * what its member I/O alone allows on this machine.
 *
 * It is NOT a RAID: concurrent writes to one row race on its parity and
 * the log wraps without a checkpoint.  Only 4 KiB writes aligned to 4 KiB
 * take the read-modify-write path; other writes (run.sh's fill) go to the
 * data member alone, and reads read the data member.
 *
 * Layout: RAID5 of the members given (at least 3), chunk 64 KiB, parity
 * rotating as in md's left-symmetric; data at DATA_OFFSET on each member,
 * the log in the LOG_SIZE bytes before it.
 *
 * Usage: nbdkit floor.so member=FILE member=FILE ... [record=true|false]
 */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <isa-l.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#define MAXM 16
#define CHUNK (64u << 10)
#define BLOCK 4096u
#define LOG_OFFSET (1u << 20)
#define LOG_SIZE (4u << 20)
#define DATA_OFFSET (LOG_OFFSET + LOG_SIZE)
#define HEADER 512u

static char *names[MAXM];
static int fds[MAXM], nm;
static bool record = true;
static int64_t member_data;                 /* data bytes per member */
static _Atomic uint64_t log_pos[MAXM];      /* each member's records so far */
static const uint8_t head[HEADER];          /* a record's header: its size is
                                               what counts here */

static int
floor_config (const char *key, const char *value)
{
  if (strcmp (key, "member") == 0) {
    if (nm == MAXM) {
      nbdkit_error ("at most %d members", MAXM);
      return -1;
    }
    names[nm++] = strdup (value);
    return 0;
  }
  if (strcmp (key, "record") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1)
      return -1;
    record = r;
    return 0;
  }
  nbdkit_error ("unknown parameter '%s'", key);
  return -1;
}

static int
floor_get_ready (void)
{
  struct stat st;

  if (nm < 3) {
    nbdkit_error ("give at least 3 members");
    return -1;
  }
  for (int i = 0; i < nm; i++) {
    if ((fds[i] = open (names[i], O_RDWR | O_CLOEXEC)) == -1
        || fstat (fds[i], &st) == -1) {
      nbdkit_error ("%s: %m", names[i]);
      return -1;
    }
    if (st.st_size <= DATA_OFFSET + CHUNK) {
      nbdkit_error ("%s: too small", names[i]);
      return -1;
    }
    if (i == 0 || st.st_size - DATA_OFFSET < member_data)
      member_data = (st.st_size - DATA_OFFSET) / CHUNK * CHUNK;
  }
  return 0;
}

static void *
floor_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
floor_get_size (void *h)
{
  return member_data * (nm - 1);
}

/* Where the chunk holding array offset `off` lives: data and parity
 * member, and the member offset of `off`. */
static void
place (uint64_t off, int *data, int *parity, uint64_t *moff)
{
  uint64_t chunk = off / CHUNK, row = chunk / (nm - 1);
  int d = chunk % (nm - 1);

  *parity = nm - 1 - (int) (row % nm);
  *data = (*parity + 1 + d) % nm;
  *moff = DATA_OFFSET + row * CHUNK + off % CHUNK;
}

/* Reads, and writes that are not one aligned 4 KiB block: the data
 * member alone, chunk by chunk. */
static int
plain (bool write, void *buf, uint32_t count, uint64_t offset)
{
  while (count > 0) {
    int d, p;
    uint64_t mo;
    uint32_t n = CHUNK - offset % CHUNK;

    if (n > count)
      n = count;
    place (offset, &d, &p, &mo);
    if ((write ? pwrite (fds[d], buf, n, mo) : pread (fds[d], buf, n, mo)) != (ssize_t) n) {
      nbdkit_error ("%s: %s: %m", write ? "pwrite" : "pread", names[d]);
      return -1;
    }
    buf = (char *) buf + n;
    offset += n;
    count -= n;
  }
  return 0;
}

static int
floor_pread (void *h, void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  return plain (false, buf, count, offset);
}

static int
io_full (int fd, bool write, struct iovec *iov, int n, uint64_t off,
         int flags, size_t len)
{
  ssize_t r = write ? pwritev2 (fd, iov, n, off, flags)
                    : preadv (fd, iov, n, off);

  if (r != (ssize_t) len) {
    nbdkit_error ("%s: %m", write ? "pwritev2" : "preadv");
    return -1;
  }
  return 0;
}

/* The member I/O of one 4 KiB read-modify-write. */
static int
rmw (const void *buf, uint64_t offset)
{
  static _Thread_local uint8_t old[3][BLOCK] __attribute__ ((aligned (64)));
  int d, p;
  uint64_t mo;
  void *src[4] = { old[0], (void *) buf, old[1], old[2] };
  struct iovec od = { old[0], BLOCK }, op = { old[1], BLOCK };

  place (offset, &d, &p, &mo);
  if (io_full (fds[d], false, &od, 1, mo, 0, BLOCK) == -1
      || io_full (fds[p], false, &op, 1, mo, 0, BLOCK) == -1)
    return -1;
  if (xor_gen (4, BLOCK, src) != 0) {   /* new P = old D ^ new D ^ old P */
    nbdkit_error ("xor_gen failed");
    return -1;
  }
  if (record) {
    uint64_t len = HEADER + 2 * BLOCK;
    uint64_t slot = atomic_fetch_add (&log_pos[p], 1) % (LOG_SIZE / len);
    struct iovec rec[3] = {
      { (void *) head, HEADER }, { (void *) buf, BLOCK }, { old[2], BLOCK }
    };

    if (io_full (fds[p], true, rec, 3, LOG_OFFSET + slot * len,
                 RWF_DSYNC, len) == -1)
      return -1;
  }
  struct iovec nd = { (void *) buf, BLOCK }, np = { old[2], BLOCK };
  if (io_full (fds[d], true, &nd, 1, mo, 0, BLOCK) == -1
      || io_full (fds[p], true, &np, 1, mo, 0, BLOCK) == -1)
    return -1;
  return 0;
}

static int
floor_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  if (count == BLOCK && offset % BLOCK == 0)
    return rmw (buf, offset);
  return plain (true, (void *) buf, count, offset);
}

static struct nbdkit_plugin plugin = {
  .name = "floor",
  .config = floor_config,
  .config_help = "member=FILE ... [record=BOOL]",
  .get_ready = floor_get_ready,
  .open = floor_open,
  .get_size = floor_get_size,
  .pread = floor_pread,
  .pwrite = floor_pwrite,
};

NBDKIT_REGISTER_PLUGIN (plugin)
