using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Iommu.Conformance.Tests.Qemu;

/// <summary>
/// A client of QEMU's qtest line protocol (<c>-qtest unix:PATH</c>): the test listens on a Unix
/// socket, QEMU connects, and each command line (<c>writeq ADDR VAL</c>, <c>readl ADDR</c>,
/// <c>outl PORT VAL</c>, <c>b64write ADDR LEN DATA</c>, …) is answered by one <c>OK …</c> line
/// (asynchronous <c>IRQ …</c> lines are skipped). Every call is bounded by a deadline; on dispose the
/// process is killed and the socket and its directory removed.
/// </summary>
internal sealed class QtestClient : IDisposable
{
    private readonly Process _process;
    private readonly Socket _listener;
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly string _dir;
    private readonly TimeSpan _timeout;

    private QtestClient(Process process, Socket listener, Socket socket, string dir, TimeSpan timeout)
    {
        _process = process;
        _listener = listener;
        _socket = socket;
        _dir = dir;
        _timeout = timeout;
        _stream = new NetworkStream(socket, ownsSocket: false) { ReadTimeout = (int)timeout.TotalMilliseconds, WriteTimeout = (int)timeout.TotalMilliseconds };
        _reader = new StreamReader(_stream, Encoding.ASCII);
    }

    /// <summary>Round trips so far (for the report).</summary>
    public long Commands { get; private set; }

    /// <summary>Full path of the QEMU binary, or null when it is not on PATH.</summary>
    public static string? FindQemu()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string p = Path.Combine(dir, "qemu-system-x86_64");
            if (File.Exists(p))
            {
                return p;
            }
        }

        return null;
    }

    /// <summary>Starts QEMU with <paramref name="args"/> plus the qtest options and waits for it to connect.</summary>
    public static QtestClient Start(string qemu, IEnumerable<string> args, TimeSpan timeout)
    {
        string dir = Directory.CreateTempSubdirectory("iommu-qtest-").FullName;
        string sock = Path.Combine(dir, "qtest.sock");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        Process? process = null;
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(sock));
            listener.Listen(1);
            var psi = new ProcessStartInfo(qemu)
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                RedirectStandardInput = true,
                UseShellExecute = false,
            };
            foreach (string a in args)
            {
                psi.ArgumentList.Add(a);
            }

            psi.ArgumentList.Add("-qtest");
            psi.ArgumentList.Add("unix:" + sock);
            psi.ArgumentList.Add("-qtest-log");
            psi.ArgumentList.Add("/dev/null");
            process = Process.Start(psi) ?? throw new InvalidOperationException("could not start " + qemu);
            var stderr = new StringBuilder();
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    lock (stderr)
                    {
                        if (stderr.Length < 64 * 1024)
                        {
                            stderr.AppendLine(e.Data);
                        }
                    }
                }
            };
            process.OutputDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();

            Task<Socket> accept = listener.AcceptAsync();
            if (!accept.Wait(timeout))
            {
                throw new TimeoutException($"QEMU did not connect to {sock} within {timeout.TotalSeconds} s; exited: {process.HasExited}; stderr: {Snapshot(stderr)}");
            }

            var client = new QtestClient(process, listener, accept.Result, dir, timeout);
            client._stderrLive = stderr;
            return client;
        }
        catch
        {
            Kill(process);
            listener.Dispose();
            TryDelete(dir);
            throw;
        }
    }

    private StringBuilder? _stderrLive;

    /// <summary>What QEMU wrote to stderr so far (capped).</summary>
    public string Stderr => _stderrLive is null ? "" : Snapshot(_stderrLive);

    public ulong Readq(ulong addr) => ParseValue(Command($"readq 0x{addr:x}"));

    public uint Readl(ulong addr) => (uint)ParseValue(Command($"readl 0x{addr:x}"));

    public void Writeq(ulong addr, ulong value) => Command($"writeq 0x{addr:x} 0x{value:x}");

    public void Writel(ulong addr, uint value) => Command($"writel 0x{addr:x} 0x{value:x}");

    public void Outl(ushort port, uint value) => Command($"outl 0x{port:x} 0x{value:x}");

    public uint Inl(ushort port) => (uint)ParseValue(Command($"inl 0x{port:x}"));

    /// <summary>Writes <paramref name="data"/> to guest memory (<c>b64write</c>).</summary>
    public void Write(ulong addr, ReadOnlySpan<byte> data) => Command($"b64write 0x{addr:x} 0x{data.Length:x} {Convert.ToBase64String(data)}");

    /// <summary>Sends one command line and returns its <c>OK</c> answer.</summary>
    public string Command(string line)
    {
        Commands++;
        byte[] bytes = Encoding.ASCII.GetBytes(line + "\n");
        try
        {
            _stream.Write(bytes);
            while (true)
            {
                string? answer = _reader.ReadLine();
                if (answer is null)
                {
                    throw new IOException($"QEMU closed the qtest connection after '{line}'. stderr: {Stderr}");
                }

                if (answer.StartsWith("IRQ", StringComparison.Ordinal))
                {
                    continue;
                }

                if (!answer.StartsWith("OK", StringComparison.Ordinal))
                {
                    throw new IOException($"qtest '{line}' answered '{answer}'");
                }

                return answer;
            }
        }
        catch (IOException e) when (e.InnerException is SocketException)
        {
            throw new TimeoutException($"qtest '{line}' got no answer within {_timeout.TotalSeconds} s. stderr: {Stderr}", e);
        }
    }

    public void Dispose()
    {
        try
        {
            _reader.Dispose();
            _stream.Dispose();
            _socket.Dispose();
            _listener.Dispose();
        }
        finally
        {
            Kill(_process);
            _process.Dispose();
            TryDelete(_dir);
        }
    }

    private static ulong ParseValue(string ok)
    {
        string[] parts = ok.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return ulong.Parse(parts[1].AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
    }

    private static string Snapshot(StringBuilder sb)
    {
        lock (sb)
        {
            return sb.ToString();
        }
    }

    private static void Kill(Process? p)
    {
        if (p is null)
        {
            return;
        }

        try
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
