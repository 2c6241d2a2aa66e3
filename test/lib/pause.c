/* The pod sandbox's process (Kubernetes' "pause"): holds the pod's
 * namespaces, reaps what is reparented to it, ends on SIGINT/SIGTERM.
 * Built static into the local sandbox image by test/cri (no registry). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  if (getpid() != 1) {
    static const char msg[] = "pause: not PID 1\n";
    (void)!write(2, msg, sizeof msg - 1);
  }
  signal(SIGINT, quit);
  signal(SIGTERM, quit);
  signal(SIGCHLD, reap);
  for (;;)
    pause();
}
