/* nbdraid: the subcommands that talk to a running server through its control
 * socket (SPEC 4.5; protocol: nbdkit-raid-control(7)).
 */
#ifndef NBDRAID_CONTROL_CLIENT_H
#define NBDRAID_CONTROL_CLIENT_H

/* Run one online subcommand.  argv[0] is the subcommand's name, the name
 * of an op of the protocol (protocol.h: status, reshape, start, freeze,
 * abort, check, repair, wait, fail, remove, add, replace, resize, set),
 * argv[1..argc-1] its options and arguments;
 * socket_path is the control socket (-C or NBDRAID_CONTROL).
 *
 * Prints the result on stdout (text, or with --json the server's reply
 * objects, pretty-printed), errors on stderr as "nbdraid: CODE: message".
 * Returns the exit status: 0 success, 1 the server refused or the request
 * failed (including a request the protocol's checks refuse before
 * connecting, a connection failure and a `wait` that timed out before the
 * action settled), 2 usage error. */
int control_main (int argc, char **argv, const char *socket_path);

/* Whether name is one of the subcommands control_main runs (an op). */
int control_is_subcommand (const char *name);

#endif
