# Processes whose status files the review of issue 15 found wrong (see
# tests/status_files.rs). argv: HOST PORT MODE GO; each mode says "ready
# PID" (and more before) and then waits until the file GO exists.
#   listen:   a listener (umask 0777 first with "umask").
#   failexec: a listener, a failed exec, then a connection to itself.
#   squat:    says "pid P", waits for GO.1, then listens.
#   orphan:   forks a child (says "child PID") that waits for GO.1 (the
#             test kills the parent meanwhile), then connects to the
#             listener it inherited and accepts: says "connected".
#   dup:      a connection to itself whose connector is moved to fd 10
#             (dup2, then the first number closed).
#   fill:     a listener and 511 connections to itself (its file's 1022
#             entries and one more), then a forked child connects once:
#             says "child PID".
import os, resource, socket, sys, time

signal_alarm = __import__("signal").alarm
signal_alarm(100)
HOST, PORT, MODE, GO = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def say(*words):
    os.write(1, (" ".join(str(w) for w in words) + "\n").encode())


def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.01)


if MODE == "umask":
    os.umask(0o777)
if MODE == "squat":
    say("pid", os.getpid())
    wait_for(GO + ".1")
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((HOST, PORT))
lst.listen(1024)
keep = []
if MODE == "failexec":
    try:
        os.execv("/nonexistent/prog", ["prog"])
    except OSError:
        pass
    keep.append(socket.create_connection((HOST, PORT)))
    keep.append(lst.accept()[0])
if MODE == "orphan":
    if os.fork() == 0:
        signal_alarm(100)  # an alarm is not inherited: never outlive a test that missed GO
        say("child", os.getpid())
        wait_for(GO + ".1")
        keep.append(socket.create_connection((HOST, PORT)))
        keep.append(lst.accept()[0])
        say("connected")
        wait_for(GO)
        os._exit(0)
if MODE == "dup":
    c = socket.create_connection((HOST, PORT))
    keep.append(lst.accept()[0])
    os.dup2(c.fileno(), 10)
    os.close(c.detach())
if MODE == "fill":
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    for _ in range(511):
        keep.append(socket.create_connection((HOST, PORT)))
        keep.append(lst.accept()[0])
    pid = os.fork()
    if pid == 0:
        signal_alarm(100)
        c = socket.create_connection((HOST, PORT))
        say("child", os.getpid())
        wait_for(GO)
        os._exit(0)
    keep.append(lst.accept()[0])
say("ready", os.getpid())
wait_for(GO)
