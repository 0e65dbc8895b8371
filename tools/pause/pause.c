/*
 * pause: the infrastructure ("sandbox") container of a pod, as a static binary.
 *
 * It holds the pod's namespaces open and does nothing else: it sleeps until a
 * signal arrives, reaps the zombies that end up with it when it runs as PID 1
 * of the pod's PID namespace, and exits 0 on SIGINT or SIGTERM.  Behaves like
 * Kubernetes' own pause container (build/pause/linux/pause.c upstream).
 *
 *   gcc -static -Os -o pause pause.c        (scripts/build-tools.sh does this)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "pyroute2-cni-test-1"

static void sigdown(int signo)
{
    (void)signo;
    _exit(0);
}

static void sigreap(int signo)
{
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

static void on(int signo, void (*handler)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) < 0) {
        perror("pause: sigaction");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        printf("pause %s\n", VERSION);
        return 0;
    }
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not running as PID 1\n");
    on(SIGINT, sigdown, 0);
    on(SIGTERM, sigdown, 0);
    on(SIGCHLD, sigreap, SA_NOCLDSTOP | SA_RESTART);
    for (;;)
        pause();
    return 1; /* not reached */
}
