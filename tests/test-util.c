/* nbdkit-raid: tests of the shared helpers (sizes, CRC32C, UUIDs, the
 * socket abort). */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "util.h"

static int checks, failures;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; \
      fprintf (stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);          \
      fprintf (stderr, __VA_ARGS__); fprintf (stderr, "\n"); } } while (0)

static void
size_ok (const char *s, uint64_t want)
{
  uint64_t v = 0;
  int r = raid_parse_size (s, &v);
  CHECK (r == 0 && v == want, "parse_size(%s) = %d, %" PRIu64, s, r, v);
}

static void
size_bad (const char *s, int want_errno)
{
  uint64_t v;
  errno = 0;
  int r = raid_parse_size (s, &v);
  CHECK (r == -1 && errno == want_errno, "parse_size(%s) accepted or errno %d", s, errno);
}

/* A TCP connection over loopback whose peer reads nothing: fill the
 * sender's queue until it would block, then end it with raid_sock_abort
 * (abort) or shutdown (the FIN-only way), and close.  Returns the bytes
 * the peer then reads and how its reading ends (0: EOF, else errno);
 * *sent gets the bytes send() accepted.  -1 when the machine has no
 * loopback TCP (the caller reports it). */
static int64_t
tcp_cut (bool abort, uint64_t *sent, int *how)
{
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t al = sizeof a;
  static char buf[65536];
  int l, c, s, sz = 65536;
  int64_t got = 0;
  ssize_t n;

  *sent = 0;
  l = socket (AF_INET, SOCK_STREAM, 0);
  c = socket (AF_INET, SOCK_STREAM, 0);
  if (l == -1 || c == -1 || bind (l, (struct sockaddr *) &a, sizeof a) == -1 ||
      listen (l, 1) == -1 || getsockname (l, (struct sockaddr *) &a, &al) == -1 ||
      setsockopt (c, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz) == -1 ||
      connect (c, (struct sockaddr *) &a, sizeof a) == -1 ||
      (s = accept (l, NULL, NULL)) == -1)
    return -1;
  fcntl (c, F_SETFL, O_NONBLOCK);
  while ((n = send (c, buf, sizeof buf, MSG_NOSIGNAL)) > 0)
    *sent += n;
  if (abort)
    raid_sock_abort (c);
  else
    shutdown (c, SHUT_RDWR);
  close (c);
  while ((n = read (s, buf, sizeof buf)) > 0)
    got += n;
  *how = n == 0 ? 0 : errno;
  close (s);
  close (l);
  return got;
}

/* raid_sock_abort drops what the connection had not sent: the peer gets
 * fewer bytes than were queued and a reset, where shutdown(2) delivers
 * them all and then the end of the stream (an NBD member cut that way
 * would still receive the writes of a connection it gave up). */
static void
test_sock_abort (void)
{
  uint64_t sent;
  int64_t got;
  int how;

  got = tcp_cut (false, &sent, &how);
  CHECK (got >= 0, "loopback TCP: %m");
  if (got < 0)
    return;
  CHECK (sent > 0 && (uint64_t) got == sent && how == 0,
         "shutdown: sent %" PRIu64 ", peer read %" PRId64 " then %s", sent, got,
         how ? raid_strerror (how) : "EOF");
  got = tcp_cut (true, &sent, &how);
  CHECK (sent > 0 && got >= 0 && (uint64_t) got < sent && how == ECONNRESET,
         "abort: sent %" PRIu64 ", peer read %" PRId64 " then %s", sent, got,
         how ? raid_strerror (how) : "EOF");

  /* a UNIX socket: the end of the stream, nothing lost (delivered at once) */
  int sv[2];
  char b[4];
  CHECK (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair: %m");
  CHECK (write (sv[0], "abc", 3) == 3, "write");
  raid_sock_abort (sv[0]);
  CHECK (read (sv[1], b, sizeof b) == 3 && read (sv[1], b, sizeof b) == 0,
         "unix: the bytes sent, then EOF");
  close (sv[0]);
  close (sv[1]);
}

int
main (void)
{
  char buf[64], us[RAID_UUID_STRLEN];
  uint8_t u[RAID_UUID_LEN], u2[RAID_UUID_LEN];

  size_ok ("0", 0);
  size_ok ("4096", 4096);
  size_ok ("64K", 65536);
  size_ok ("64k", 65536);
  size_ok ("1M", 1 << 20);
  size_ok ("3G", UINT64_C(3) << 30);
  size_ok ("2T", UINT64_C(2) << 40);
  size_bad ("", EINVAL);
  size_bad ("-1", EINVAL);
  size_bad ("12X", EINVAL);
  size_bad ("1KB", EINVAL);
  size_bad ("K", EINVAL);
  size_bad ("99999999999999999999", ERANGE);
  size_bad ("17179869184T", ERANGE);

  CHECK (raid_crc32c ("123456789", 9) == 0xe3069283u, "crc32c check value %08x",
         raid_crc32c ("123456789", 9));
  CHECK (raid_crc32c ("", 0) == 0, "crc32c of nothing");

  raid_uuid_generate (u);
  raid_uuid_format (u, us);
  CHECK (strlen (us) == 36 && us[8] == '-' && us[13] == '-' && us[14] == '4',
         "uuid format %s", us);
  CHECK (raid_uuid_parse (us, u2) == 0 && memcmp (u, u2, 16) == 0, "uuid round trip");
  CHECK (raid_uuid_parse ("1234", u2) == -1, "short uuid accepted");
  CHECK (raid_uuid_parse ("zzzzzzzz-1234-1234-1234-123456789012", u2) == -1, "bad hex");
  CHECK (!raid_uuid_is_null (u), "random uuid is null");

  CHECK (strcmp (raid_fmt_size (65536, buf, sizeof buf), "64K") == 0, "fmt %s", buf);
  CHECK (strcmp (raid_fmt_size (1536, buf, sizeof buf), "1.5K") == 0, "fmt %s", buf);
  CHECK (strcmp (raid_fmt_size (100, buf, sizeof buf), "100") == 0, "fmt %s", buf);
  CHECK (raid_round_up (4097, 4096) == 8192 && raid_round_down (4097, 4096) == 4096, "round");

  test_sock_abort ();

  if (failures) {
    fprintf (stderr, "test-util: %d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf ("test-util: %d checks passed\n", checks);
  return 0;
}
