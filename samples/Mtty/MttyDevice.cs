using System.Buffers.Binary;

namespace Mtty;

/// <summary>
/// The emulated state of one mtty card: a 256-byte PCI config space and one 16550-style UART per port,
/// each behind an 8-byte I/O BAR. Bytes written to a port's transmit register loop back into its
/// receive FIFO, as the kernel sample does.
/// </summary>
/// <remarks>Thread safety: every access takes the card's lock.</remarks>
public sealed class MttyDevice
{
    /// <summary>PCI vendor ID of the card (mtty uses 0x4348).</summary>
    public const ushort VendorId = 0x4348;

    /// <summary>PCI device ID (0x3253).</summary>
    public const ushort DeviceId = 0x3253;

    /// <summary>Size of each port's I/O BAR.</summary>
    public const int IoBarSize = 8;

    /// <summary>Depth of a port's receive FIFO.</summary>
    public const int FifoSize = 16;

    private readonly byte[] _config = new byte[256];
    private readonly Uart[] _ports;

    internal MttyDevice(int ports)
    {
        _ports = new Uart[ports];
        Reset();
    }

    /// <summary>Number of serial ports (1 or 2).</summary>
    public int Ports => _ports.Length;

    internal object SyncRoot { get; } = new();

    internal Dictionary<ulong, (ulong PhysPfn, int Pins, bool Writable)> Pinned { get; } = [];

    /// <summary>The IOVA page frames the card holds pinned, ascending.</summary>
    public IReadOnlyList<ulong> PinnedPfns
    {
        get
        {
            lock (SyncRoot)
            {
                var list = Pinned.Keys.ToList();
                list.Sort();
                return list;
            }
        }
    }

    internal Vfio.Mdev.Pinning.VfioIommuNotifier? Notifier { get; set; }

    /// <summary>Puts config space and ports back to power-on values (VFIO_DEVICE_RESET).</summary>
    public void Reset()
    {
        lock (SyncRoot)
        {
            Array.Clear(_config);
            BinaryPrimitives.WriteUInt16LittleEndian(_config, VendorId);
            BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(2), DeviceId);
            BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(6), 0x0200); // status: fast back-to-back
            _config[0x08] = 0x10; // revision
            _config[0x09] = 0x02; // prog-if 16550
            _config[0x0a] = 0x00; // subclass: serial
            _config[0x0b] = 0x07; // class: communication
            for (int i = 0; i < _ports.Length; i++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(0x10 + (4 * i)), 0x1); // I/O BAR
                _ports[i] = new Uart();
            }

            BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(0x2c), 0x32534348); // subsystem
            _config[0x3c] = 0xff;
            _config[0x3d] = 0x01; // INTA
        }
    }

    internal void ReadConfig(int pos, Span<byte> buffer)
    {
        lock (SyncRoot)
        {
            _config.AsSpan(pos, buffer.Length).CopyTo(buffer);
        }
    }

    internal void WriteConfig(int pos, ReadOnlySpan<byte> buffer)
    {
        lock (SyncRoot)
        {
            for (int i = 0; i < buffer.Length; i++)
            {
                WriteConfigByte(pos + i, buffer[i]);
            }
        }
    }

    internal byte ReadPort(int port, int reg)
    {
        lock (SyncRoot)
        {
            return _ports[port].Read(reg);
        }
    }

    internal void WritePort(int port, int reg, byte value)
    {
        lock (SyncRoot)
        {
            _ports[port].Write(reg, value);
        }
    }

    private void WriteConfigByte(int pos, byte value)
    {
        switch (pos)
        {
            case 0x04 or 0x05: // command
            case 0x0c or 0x0d: // cache line, latency
            case 0x3c: // interrupt line
                _config[pos] = value;
                break;
            case >= 0x10 and < 0x18:
                int bar = (pos - 0x10) / 4;
                if (bar >= _ports.Length)
                {
                    break; // no such BAR: reads stay 0
                }

                _config[pos] = value;
                int start = 0x10 + (4 * bar);
                uint v = BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(start));
                v = (v & ~(uint)(IoBarSize - 1)) | 0x1; // size the BAR, keep the I/O space bit
                BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(start), v);
                break;
            default:
                break; // read-only
        }
    }

    private sealed class Uart
    {
        private readonly Queue<byte> _rx = new();
        private byte _ier;
        private byte _lcr;
        private byte _mcr;
        private byte _scr;
        private byte _dll = 0x0c;
        private byte _dlm;

        private bool Dlab => (_lcr & 0x80) != 0;

        public byte Read(int reg) => reg switch
        {
            0 when Dlab => _dll,
            0 => _rx.Count > 0 ? _rx.Dequeue() : (byte)0,
            1 when Dlab => _dlm,
            1 => _ier,
            2 => (byte)(_rx.Count > 0 && (_ier & 0x1) != 0 ? 0xc4 : 0xc1),
            3 => _lcr,
            4 => _mcr,
            5 => (byte)(0x60 | (_rx.Count > 0 ? 0x1 : 0x0) | (_rx.Count >= FifoSize ? 0x2 : 0x0)),
            6 => 0xb0,
            7 => _scr,
            _ => 0,
        };

        public void Write(int reg, byte value)
        {
            switch (reg)
            {
                case 0 when Dlab:
                    _dll = value;
                    break;
                case 0:
                    if (_rx.Count < FifoSize)
                    {
                        _rx.Enqueue(value); // loop back
                    }

                    break;
                case 1 when Dlab:
                    _dlm = value;
                    break;
                case 1:
                    _ier = (byte)(value & 0x0f);
                    break;
                case 2:
                    if ((value & 0x2) != 0)
                    {
                        _rx.Clear();
                    }

                    break;
                case 3:
                    _lcr = value;
                    break;
                case 4:
                    _mcr = value;
                    break;
                case 7:
                    _scr = value;
                    break;
                default:
                    break;
            }
        }
    }
}
