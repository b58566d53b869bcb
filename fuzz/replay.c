/* nbdkit-raid: run a fuzz target on saved inputs, without libFuzzer.
 *
 * `make check` compiles each fuzz target with this main() (gcc or clang,
 * under ASan/UBSan in the sanitizer build) and feeds it every file of the
 * directories and files named on the command line: the checked-in corpus
 * and every input that ever crashed.  A target that crashes, trips a
 * sanitizer or fails its own checks (abort) fails the test; a clean run
 * prints how many inputs it replayed.  An input that runs longer than
 * FUZZ_REPLAY_TIMEOUT seconds (default 10: starting or refusing an array
 * must take seconds, not minutes) fails it too.  The same target source
 * built with clang -fsanitize=fuzzer (make fuzz) gets libFuzzer's main
 * instead.
 *
 * Without arguments it replays the directories of its own target, named
 * after the program (replay-NAME): $abs_srcdir/fuzz/corpus/NAME and
 * $abs_srcdir/fuzz/crashes/NAME, as make check runs it.
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static const char *current;
static unsigned timeout_s = 10;

static void
on_alarm (int sig)
{
  static const char msg[] = "replay: an input ran out of time: ";
  ssize_t r = write (2, msg, sizeof msg - 1);
  r = write (2, current, strlen (current));
  r = write (2, "\n", 1);
  (void) r;
  _exit (124);
}

static int
run_file (const char *path)
{
  FILE *fp = fopen (path, "rb");
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0, n;

  if (fp == NULL) {
    fprintf (stderr, "%s: %s\n", path, strerror (errno));
    return -1;
  }
  do {
    if (len == cap) {
      uint8_t *b2 = realloc (buf, cap = cap ? cap * 2 : 65536);
      if (!b2) {
        fprintf (stderr, "%s: out of memory\n", path);
        free (buf);
        fclose (fp);
        return -1;
      }
      buf = b2;
    }
    n = fread (buf + len, 1, cap - len, fp);
    len += n;
  } while (n > 0);
  fclose (fp);
  if (getenv ("FUZZ_REPLAY_VERBOSE"))
    fprintf (stderr, "replay: %s (%zu bytes)\n", path, len);
  current = path;
  alarm (timeout_s);
  LLVMFuzzerTestOneInput (buf, len);
  alarm (0);
  free (buf);
  return 0;
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Every regular file of dir, in name order (a deterministic run). */
static int
run_dir (const char *dir, int *count)
{
  DIR *d = opendir (dir);
  struct dirent *de;
  char **names = NULL;
  size_t n = 0, cap = 0;
  int r = 0;

  if (d == NULL) {
    fprintf (stderr, "%s: %s\n", dir, strerror (errno));
    return -1;
  }
  while ((de = readdir (d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    if (n == cap) {
      char **n2 = realloc (names, (cap = cap ? cap * 2 : 64) * sizeof *names);
      if (!n2)
        break;
      names = n2;
    }
    if (asprintf (&names[n], "%s/%s", dir, de->d_name) < 0)
      break;
    n++;
  }
  closedir (d);
  if (n > 0)
    qsort (names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (r == 0 && stat (names[i], &st) == 0 && S_ISREG (st.st_mode)) {
      r = run_file (names[i]);
      ++*count;
    }
    free (names[i]);
  }
  free (names);
  return r;
}

int
main (int argc, char **argv)
{
  char *own[3] = { NULL, NULL, NULL }, *prog = strdup (argv[0]);
  const char *srcdir = getenv ("abs_srcdir"), *t = getenv ("FUZZ_REPLAY_TIMEOUT");
  int count = 0;

  if (t && atoi (t) > 0)
    timeout_s = atoi (t);
  signal (SIGALRM, on_alarm);
  if (argc < 2) {
    const char *name = prog ? basename (prog) : "";
    if (strncmp (name, "lt-", 3) == 0)
      name += 3;
    if (strncmp (name, "replay-", 7) != 0) {
      fprintf (stderr, "usage: %s FILE|DIR...\n", argv[0]);
      return 2;
    }
    if (asprintf (&own[0], "%s/fuzz/corpus/%s", srcdir ? srcdir : ".", name + 7) < 0 ||
        asprintf (&own[1], "%s/fuzz/crashes/%s", srcdir ? srcdir : ".", name + 7) < 0)
      return 1;
  }
  for (int i = 0; i < (own[0] ? 2 : argc - 1); i++) {
    const char *arg = own[0] ? own[i] : argv[i + 1];
    struct stat st;
    if (stat (arg, &st) == -1) {
      if (own[0] && errno == ENOENT)
        continue;                          /* no crash ever for this target */
      fprintf (stderr, "%s: %s\n", arg, strerror (errno));
      return 1;
    }
    if (S_ISDIR (st.st_mode) ? run_dir (arg, &count) != 0
        : (count++, run_file (arg) != 0))
      return 1;
  }
  fuzz_fini ();
  printf ("%s: %d inputs replayed, no failure\n", prog, count);
  free (own[0]);
  free (own[1]);
  free (prog);
  return 0;
}
