/* nbdraid: what every subcommand shares (messages, argument spellings). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void
error (const char *fmt, ...)
{
  va_list ap;

  fputs ("nbdraid: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

/* "5" or "raid5" */
int
parse_level (const char *s, int *level)
{
  char *end;
  long v;

  if (strncmp (s, "raid", 4) == 0)
    s += 4;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  v = strtol (s, &end, 10);
  if (errno || *end || v > 99)
    return -1;
  *level = (int) v;
  return 0;
}
