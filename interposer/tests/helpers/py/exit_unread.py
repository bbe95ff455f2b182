# Peer sends data then the process exits (os._exit: no close()); we read afterwards.
import socket, time, sys, os
addr = (os.environ['TEST_HOST'], 0)
mode = sys.argv[1]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(addr); ls.listen(4); port = ls.getsockname()[1]
pid = os.fork()
if pid == 0:
    ls.close()
    c = socket.create_connection((addr[0], port))
    c.recv(1)
    time.sleep(0.2)
    c.sendall(b'B')
    time.sleep(0.3)
    os._exit(0)
s, _ = ls.accept()
s.send(b'g')
if mode == 'late':
    os.waitpid(pid, 0)
try:
    print(mode, 'recv1', s.recv(16)); print('recv2', s.recv(16))
except Exception as e:
    print('exc', e)
if mode != 'late': os.waitpid(pid, 0)
