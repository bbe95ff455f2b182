// A JDK HttpServer on ADDR PORT (argv) serving 1 MiB of (i * 31) & 0xff at /:
// Java binds an AF_INET6 socket to the IPv4-mapped address, for
// interposer/tests/emulated.rs (IPv4 clients must reach it).
import com.sun.net.httpserver.*;
import java.net.InetSocketAddress;
import java.io.OutputStream;
public class HttpSrv {
    public static void main(String[] a) throws Exception {
        HttpServer s = HttpServer.create(new InetSocketAddress(a[0], Integer.parseInt(a[1])), 16);
        byte[] body = new byte[1 << 20];
        for (int i = 0; i < body.length; i++) body[i] = (byte) (i * 31);
        s.createContext("/", x -> { x.sendResponseHeaders(200, body.length); try (OutputStream o = x.getResponseBody()) { o.write(body); } });
        s.start();
        System.out.println("listening");
    }
}
