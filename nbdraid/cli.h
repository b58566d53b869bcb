/* nbdraid: what every subcommand shares (cli.c). */
#ifndef NBDRAID_CLI_H
#define NBDRAID_CLI_H

/* Print "nbdraid: MESSAGE" on stderr. */
void error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* A level given as "5" or "raid5": 0, or -1 when malformed. */
int parse_level (const char *s, int *level);

#endif
