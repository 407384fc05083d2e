using System.Globalization;
using Iommu.Memory;

namespace VtdEmulator;

/// <summary>
/// The guest's VT-d driver: it writes tables into guest RAM and programs the unit through MMIO
/// only, as a guest kernel does. Offsets and bit positions are the guest's own (from the VT-d
/// specification), not the library's constants.
/// </summary>
internal sealed class GuestDriver
{
    // Registers (offsets from the unit's MMIO base).
    private const ulong Gcmd = 0x18, Gsts = 0x1C, Rtaddr = 0x20, Fsts = 0x34, Fectl = 0x38, Fedata = 0x3C, Feaddr = 0x40;
    private const ulong Iqh = 0x80, Iqt = 0x88, Iqa = 0x90;
    private const uint Te = 1u << 31, Srtp = 1u << 30, Qie = 1u << 26;

    private readonly IMmio _mmio;
    private readonly PhysicalMemory _ram;
    private readonly ulong _root;
    private readonly ulong _queue;
    private readonly ulong _status;
    private ulong _next;      // the guest's page allocator: a bump pointer
    private uint _waits;

    public GuestDriver(IMmio mmio, PhysicalMemory ram, ulong tableArea)
    {
        _mmio = mmio;
        _ram = ram;
        _next = tableArea;
        _root = AllocPage();
        _queue = AllocPage();
        _status = AllocPage();
    }

    /// <summary>The fault records the guest's interrupt handler read, in order.</summary>
    public List<string> FaultLog { get; } = [];

    /// <summary>Brings the unit up: root table, queued invalidation, fault interrupts, translation.</summary>
    public void Start(ulong faultMsiAddress, uint faultMsiData)
    {
        _mmio.Write(Rtaddr, 8, _root);                       // legacy mode (TTM = 0)
        Command(Srtp);
        _mmio.Write(Iqt, 8, 0);
        _mmio.Write(Iqa, 8, _queue);                         // 256 descriptors of 128 bits
        Command(Qie);
        _mmio.Write(Feaddr, 4, faultMsiAddress);
        _mmio.Write(Fedata, 4, faultMsiData);
        _mmio.Write(Fectl, 4, 0);                            // unmask fault events
        InvalidateAll();
        Command(Te);
    }

    /// <summary>Puts device <paramref name="rid"/> in domain <paramref name="did"/> with an empty 4-level second-level table; returns the table.</summary>
    public ulong AddDevice(ushort rid, ushort did)
    {
        ulong rootEntry = _root + ((ulong)(rid >> 8) * 16);
        ulong context = _ram.ReadUInt64(rootEntry) & ~0xFFFUL;
        if (context == 0)
        {
            context = AllocPage();
            _ram.WriteUInt64(rootEntry, context | 1);
        }

        ulong sl = AllocPage();
        ulong entry = context + ((ulong)(rid & 0xFF) * 16);
        _ram.WriteUInt64(entry + 8, 2 | ((ulong)did << 8));  // AW = 2 (48-bit, 4 levels), DID
        _ram.WriteUInt64(entry, sl | 1);                      // present, TT = 0
        return sl;
    }

    /// <summary>Maps one 4 KiB page read/write (the entry written, then the IOTLB told, as a strict guest does).</summary>
    public void Map(ulong sl, ushort did, ulong iova, ulong pa)
    {
        _ram.WriteUInt64(LeafSlot(sl, iova), pa | 3);
        InvalidatePage(did, iova);
    }

    /// <summary>Unmaps one page and waits until the unit has dropped it.</summary>
    public void Unmap(ulong sl, ushort did, ulong iova)
    {
        _ram.WriteUInt64(LeafSlot(sl, iova), 0);
        InvalidatePage(did, iova);
    }

    /// <summary>The guest's fault interrupt handler: reads and clears every pending fault record.</summary>
    public void OnFaultInterrupt()
    {
        ulong cap = _mmio.Read(0x08, 8);
        ulong records = ((cap >> 24) & 0x3FF) * 16;
        int count = (int)((cap >> 40) & 0xFF) + 1;
        for (int i = 0; i < count; i++)
        {
            ulong hi = _mmio.Read(records + ((ulong)i * 16) + 8, 8);
            if ((hi >> 63) == 0)
            {
                continue;
            }

            ulong lo = _mmio.Read(records + ((ulong)i * 16), 8);
            FaultLog.Add(string.Create(CultureInfo.InvariantCulture,
                $"{((hi >> 62) & 1) switch { 1 => "read", _ => "write" }} by {hi & 0xFFFF:x4} at 0x{lo & ~0xFFFUL:x}, reason 0x{(hi >> 32) & 0xFF:x2}"));
            _mmio.Write(records + ((ulong)i * 16) + 12, 4, 1u << 31); // F is RW1C
        }

        _mmio.Write(Fsts, 4, 0x7F);
    }

    private ulong LeafSlot(ulong sl, ulong iova)
    {
        ulong table = sl;
        for (int level = 4; level > 1; level--)
        {
            ulong slot = table + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8);
            ulong e = _ram.ReadUInt64(slot);
            if ((e & 3) == 0)
            {
                e = AllocPage() | 3;
                _ram.WriteUInt64(slot, e);
            }

            table = e & 0x000F_FFFF_FFFF_F000;
        }

        return table + (((iova >> 12) & 0x1FF) * 8);
    }

    private void InvalidateAll()
    {
        Submit(0x1 | (1UL << 4), 0);                         // context cache, global
        Submit(0x2 | (1UL << 4), 0);                         // IOTLB, global
        Wait();
    }

    private void InvalidatePage(ushort did, ulong iova)
    {
        Submit(0x2 | (3UL << 4) | ((ulong)did << 16), iova); // IOTLB, page-selective, AM = 0
        Wait();
    }

    // A wait descriptor with a status write; the guest polls the status, as Linux's qi_submit_sync does.
    private void Wait()
    {
        uint token = ++_waits;
        Submit(0x5 | (1UL << 5) | ((ulong)token << 32), _status);
        if (_ram.ReadUInt32(_status) != token)
        {
            throw new InvalidOperationException($"wait descriptor {token} did not complete (IQH 0x{_mmio.Read(Iqh, 8):x}, FSTS 0x{_mmio.Read(Fsts, 4):x})");
        }
    }

    private void Submit(ulong q0, ulong q1)
    {
        ulong tail = _mmio.Read(Iqt, 8);
        _ram.WriteUInt64(_queue + tail, q0);
        _ram.WriteUInt64(_queue + tail + 8, q1);
        _mmio.Write(Iqt, 8, (tail + 16) % 4096);
    }

    private void Command(uint bit)
    {
        uint status = (uint)_mmio.Read(Gsts, 4) & 0x96FF_FFFF; // the persistent command bits
        _mmio.Write(Gcmd, 4, status | bit);
        if ((bit == Srtp || bit == Te || bit == Qie) && ((uint)_mmio.Read(Gsts, 4) & bit) == 0)
        {
            throw new InvalidOperationException($"GSTS did not report 0x{bit:x}");
        }
    }

    private ulong AllocPage()
    {
        ulong pa = _next;
        _next += 0x1000;
        _ram.Fill(pa, 0x1000, 0);
        return pa;
    }
}

/// <summary>The emulator's MMIO dispatch as the guest driver sees it.</summary>
internal interface IMmio
{
    ulong Read(ulong offset, int size);

    void Write(ulong offset, int size, ulong value);
}
