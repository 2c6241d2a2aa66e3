/* A hostile guest: the /init of a test initrd. It dials the proxy as
 * runq-init does, completes the handshake, takes the Start message, then
 * sends the frame named in /mode and waits: whatever ends the container
 * must be the proxy's doing. Frames are postcard-encoded runq messages
 * (enum index, then fields as varints), each behind a u32 LE length. */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/vm_sockets.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static int fd;

static void put(const void *b, size_t n) {
  if (write(fd, b, n) != (ssize_t)n) _exit(1);
}

static void frame(const unsigned char *p, uint32_t n) {
  put(&n, 4); /* little-endian on x86_64 */
  put(p, n);
}

static void skip_frame(void) {
  uint32_t n;
  unsigned char buf[4096];
  if (read(fd, &n, 4) != 4) _exit(1);
  while (n) {
    ssize_t r = read(fd, buf, n < sizeof buf ? n : sizeof buf);
    if (r <= 0) _exit(1);
    n -= r;
  }
}

/* The kernel command line says runq.template (a VM template's guest). */
static int booted_as_template(void) {
  char cmdline[4096] = {0};
  mkdir("/proc", 0555);
  if (mount("proc", "/proc", "proc", 0, NULL)) return 0;
  FILE *c = fopen("/proc/cmdline", "r");
  if (!c) return 0;
  if (!fgets(cmdline, sizeof cmdline, c)) cmdline[0] = 0;
  fclose(c);
  return strstr(cmdline, "runq.template") != NULL;
}

int main(void) {
  char mode[32] = {0};
  FILE *f = fopen("/mode", "r");
  if (!f || !fgets(mode, sizeof mode, f)) return 1;
  mode[strcspn(mode, "\n")] = 0;
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = 1024};
  if (booted_as_template()) {
    /* As runq-init does on a VM template: say it is ready to be saved,
     * then dial once the vsock device is plugged in (each kernel uevent
     * is a reason to try again; connect fails with ENODEV until then). */
    int ue = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    struct sockaddr_nl nl = {.nl_family = AF_NETLINK, .nl_groups = 1};
    struct timeval tv = {1, 0};
    if (ue < 0 || bind(ue, (struct sockaddr *)&nl, sizeof nl) ||
        setsockopt(ue, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv))
      return 1;
    static const char ready[] = "runq-init: template ready\n";
    if (write(2, ready, sizeof ready - 1) < 0) return 1;
    for (;;) {
      fd = socket(AF_VSOCK, SOCK_STREAM, 0);
      if (fd < 0) return 1;
      if (!connect(fd, (struct sockaddr *)&a, sizeof a)) break;
      if (errno != ENODEV) return 1;
      close(fd);
      char ev[4096];
      (void)recv(ue, ev, sizeof ev, 0);
    }
  } else {
    fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) return 1;
  }
  static const unsigned char hello[] = {0x04}; /* Hello { version: 4 } */
  frame(hello, sizeof hello);
  skip_frame(); /* the host's Hello */
  skip_frame(); /* Start */
  if (!strcmp(mode, "flood")) {
    /* 1,000 legal Stdout frames of 64 KiB (64 MiB the host must relay,
     * not hold), then the oversized length. */
    static unsigned char out[4 + 65536];
    out[0] = 0x00; /* GuestMsg::Stdout */
    out[1] = 0x80; out[2] = 0x80; out[3] = 0x04; /* varint 65536 */
    memset(out + 4, 'x', 65536);
    for (int i = 0; i < 1000; i++) frame(out, sizeof out);
    uint32_t n = 0x7fffffff;
    put(&n, 4);
  } else if (!strcmp(mode, "oversized")) {
    uint32_t n = 0x7fffffff; /* then nothing: the length alone must do */
    put(&n, 4);
  } else if (!strcmp(mode, "malformed")) {
    static const unsigned char bad[] = {0x7f, 0xff, 0xff};
    frame(bad, sizeof bad);
  } else if (!strcmp(mode, "hostonly")) {
    /* HostMsg::Resize { 24, 80 }'s bytes: the host reads them as a GuestMsg
     * (a Failed cut short), so they are refused as any bad frame */
    static const unsigned char resize[] = {0x03, 0x18, 0x50};
    frame(resize, sizeof resize);
  } else if (!strcmp(mode, "signal")) {
    /* Exit(Signaled(i32::MAX)): zigzag varint of 0x7fffffff */
    static const unsigned char exit_msg[] = {0x02, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f};
    frame(exit_msg, sizeof exit_msg);
  }
  for (;;) pause();
}
