# A server for C stdio on a connection (tests/stdio_streams.rs).
# argv: host port mode (env STDIO_FILE: the shell's file)
#   echo:  reads up to "END\n", checks the bytes against what
#          bash's builtins send (`BASH_SENDS`), answers "got LEN OK";
#   shell: forks and execs `bash -c SHELL` with the connection as stdin
#          and stdout (inetd style: subprocess dup2()s it onto 0 and 1).
import hashlib, socket, subprocess, sys
BASH_SENDS = b"hello world\n" + b"ABCDEFGHIJ" * 20000 + b"\nEND\n"
# echo and printf are bash builtins (stdout's FILE), cat an external
# program; after the exec the connection is the shell's fd 0 and 1, and a
# redirection to a file ($STDIO_FILE) must reach the file.
SHELL = ("echo hello; printf '%s-%d\\n' x 5; echo 'to the file' > \"$STDIO_FILE\"; "
         "printf '%.0sABCDEFGHIJ' {1..20000}; echo; cat; echo bye")
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(1)
print("port", srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
if mode == "echo":
    data = b""
    while not data.endswith(b"END\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    same = hashlib.sha256(data).digest() == hashlib.sha256(BASH_SENDS).digest()
    print("server", len(data), "OK" if same else "DIFFERENT", flush=True)
    conn.sendall(b"got %d %s\n" % (len(data), b"OK" if same else b"DIFFERENT"))
    conn.close()
elif mode == "shell":
    child = subprocess.Popen(["bash", "-c", SHELL], stdin=conn, stdout=conn)
    conn.close()
    print("child", child.wait(), flush=True)
