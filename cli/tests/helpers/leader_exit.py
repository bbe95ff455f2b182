# A server whose main thread leaves (pthread_exit: the thread-group
# leader becomes a zombie) while a thread goes on serving: a live process.
# Prints "port PORT" then, once the main thread is gone, the client gets
# its echo; the thread echoes forever.
import ctypes, socket, threading
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print("port", s.getsockname()[1], flush=True)
def serve():
    c, _ = s.accept()
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    threading.Event().wait()
threading.Thread(target=serve).start()
ctypes.CDLL(None).pthread_exit(None)  # (ctypes lets go of the GIL)
