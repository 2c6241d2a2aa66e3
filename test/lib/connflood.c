/* connflood N: open N TCP connections to 127.0.0.11:53 (Docker's embedded
 * DNS as the guest sees it), each sending half a DNS-over-TCP query (a
 * length prefix and nothing more) and held open, at most 1000 at a time
 * (the oldest closed first). Prints "connected C of N" and then "done";
 * the test watches the proxy's threads meanwhile. Static, so that it runs
 * from a volume in any image. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define HELD 1000

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000, connected = 0;
  static int fds[HELD];
  struct sockaddr_in dns = {.sin_family = AF_INET, .sin_port = htons(53)};
  inet_pton(AF_INET, "127.0.0.11", &dns.sin_addr);
  for (int i = 0; i < HELD; i++) fds[i] = -1;
  for (int i = 0; i < n; i++) {
    int *slot = &fds[i % HELD];
    if (*slot >= 0) close(*slot);
    *slot = socket(AF_INET, SOCK_STREAM, 0);
    if (*slot < 0) { perror("socket"); return 1; }
    if (connect(*slot, (struct sockaddr *)&dns, sizeof dns) == 0) {
      connected++;
      (void)!write(*slot, "\0\x20", 2);
    }
  }
  printf("connected %d of %d\n", connected, n);
  fflush(stdout);
  for (int i = 0; i < HELD; i++) if (fds[i] >= 0) close(fds[i]);
  printf("done\n");
  return 0;
}
