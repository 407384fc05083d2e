using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Benchmarks;

/// <summary>
/// SVA through the kernel path (issue 21, 5.15): a first-level unit with device-TLBs and page requests and
/// the intel-iommu driver (which enables the device's PASID, PRI and ATS at attach), one ATS/PRI device with
/// IOPF and SVA enabled, one process whose first mapping holds the benchmark's pages.
/// </summary>
internal sealed class SvaStack : IDisposable
{
    public SvaStack()
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true });
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Pci.SetIommuOps(new IntelIommu(Platform, new IntelIommuOptions { FirstLevel = FirstLevelPolicy.AllWhenEveryUnitHasFlts }, Unit)).ThrowIfError();
        Device = Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        Iommu.DevEnableFeature(Device, IommuDevFeature.Iopf).ThrowIfError();
        if (!Device.AtsEnabled || !Device.PriEnabled)
        {
            throw new InvalidOperationException("the driver did not enable ATS and PRI at attach (ECAP.DT and PRS are set)");
        }

        Iommu.DevEnableFeature(Device, IommuDevFeature.Sva).ThrowIfError();
        Mm = new ProcessAddressSpace(HostPageAllocator.ForPlatform(Platform), "bench");
    }

    public Platform Platform { get; }

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public PciDevice Device { get; }

    public ProcessAddressSpace Mm { get; }

    public IommuCore Iommu => Platform.Iommu;

    public void Dispose()
    {
        Mm.Dispose();
        Platform.Dispose();
    }
}

/// <summary>The SVA rows' workload: ref_dma.c's read sequence moved to the process's first mapping.</summary>
internal static class SvaWorkload
{
    /// <summary>Where a fresh process's first mmap lands (ProcessAddressSpace's mmap base); the C floors map their pages there too.</summary>
    public const ulong VaBase = 0x7F00_0000_0000;

    /// <summary>ref_dma.c's IOVAs over <paramref name="pages"/> pages, at <see cref="VaBase"/> instead of its base.</summary>
    public static ulong[] Vas(int pages, int length, int count)
    {
        ulong[] vas = Workload.DmaIovas(pages, length, count);
        for (int i = 0; i < vas.Length; i++)
        {
            vas[i] = vas[i] - Workload.DmaIovaBase + VaBase;
        }

        return vas;
    }

    /// <summary>Maps <paramref name="pages"/> pages in <paramref name="mm"/> and writes ones into each (the CPU faults them in, as the C arena is filled).</summary>
    public static void MapTouched(ProcessAddressSpace mm, int pages)
    {
        ulong va = mm.Mmap((ulong)pages << 12);
        if (va != VaBase)
        {
            throw new InvalidOperationException($"the first mmap landed at 0x{va:X}, not at 0x{VaBase:X}");
        }

        for (int i = 0; i < pages; i++)
        {
            mm.Write(va + ((ulong)i << 12), DmaStack.Ones).ThrowIfError();
        }
    }
}

/// <summary>
/// A 64 B device read with the PASID of an SVA-bound process (<see cref="IommuCore.SvaBindDevice"/>):
/// <see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/> through the unit on a first-level (PGTT=001)
/// PASID entry whose FLPTR is the process's own IA-32e tables, at ref_dma.c's pseudo-random addresses over
/// <see cref="Pages"/> touched pages. The C row walks 4-level IA-32e tables (P and U/S checked, A set)
/// and copies from a flat arena (ref_sva_shim.c), over the same addresses.
/// </summary>
[MemoryDiagnoser]
public abstract unsafe class SvaWalkWorkload : IDisposable
{
    /// <summary>64 B reads per invocation.</summary>
    public const int Ops = 1 << 16;

    private readonly byte* _buffer = DmaReads.AllocBuffer(4096);
    private SvaStack? _stack;
    private uint _pasid;
    private ulong[] _vas = [];
    private SvaFloor? _floor;

    /// <summary>Touched pages the reads land in.</summary>
    protected abstract int Pages { get; }

    [GlobalSetup(Target = nameof(FirstLevelRead64B))]
    public void SetupModel()
    {
        _stack = new SvaStack();
        SvaWorkload.MapTouched(_stack.Mm, Pages);
        _stack.Iommu.SvaBindDevice(_stack.Device, _stack.Mm, null, out IommuSva? handle).ThrowIfError();
        _pasid = _stack.Iommu.SvaGetPasid(handle!);
        _vas = SvaWorkload.Vas(Pages, 64, Ops);

        // The row is what its name says: over 1,024 pages a second pass misses the IOTLB nowhere, over
        // 65,536 pages mostly.
        FirstLevelRead64B();
        long misses = _stack.Unit.Statistics.IotlbMisses;
        FirstLevelRead64B();
        long again = _stack.Unit.Statistics.IotlbMisses - misses;
        if (Pages <= _stack.Unit.Config.IotlbCapacity / 2 ? again != 0 : again < Ops / 2)
        {
            throw new InvalidOperationException($"{again} IOTLB misses in a pass over {Pages} pages");
        }
    }

    [GlobalSetup(Target = nameof(CFirstLevelRead64B))]
    public void SetupC()
    {
        _floor = new SvaFloor();
        if (((delegate* unmanaged<nuint, ulong, int>)_floor.Export("rs_setup"))((nuint)Pages, SvaWorkload.VaBase) != 0)
        {
            throw new InvalidOperationException("C floor: rs_setup could not allocate");
        }

        _vas = SvaWorkload.Vas(Pages, 64, Ops);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _stack?.Dispose();
        _floor?.Dispose();
        NativeMemory.AlignedFree(_buffer);
        GC.SuppressFinalize(this);
    }

    /// <summary>A 64 B read with the process's PASID through the unit's first-level walk (or its IOTLB).</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong FirstLevelRead64B() => DmaReads.Read(_stack!.Device, _pasid, _vas, new Span<byte>(_buffer, 64));

    /// <summary>The C floor: an IA-32e walk and a 64 B copy.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong CFirstLevelRead64B() => _floor!.WalkRead(_vas, 64, _buffer);
}

/// <summary>1,024 pages: the translations stay in the IOTLB.</summary>
public class SvaWalk1K : SvaWalkWorkload
{
    protected override int Pages => 1 << 10;
}

/// <summary>65,536 pages: 16 × the IOTLB, so most reads walk the process's tables.</summary>
public class SvaWalk64K : SvaWalkWorkload
{
    protected override int Pages => 1 << 16;
}

/// <summary>
/// The unit driven as the hardware sees software, with no driver: root, scalable context (DTE, PRE),
/// PASID directory and first-level PASID entries written in memory with the spec's bits, the
/// invalidation queue (256-bit descriptors) and the page request queue programmed through registers,
/// and one ATS/PRI device 03:00.0. The page request queue is the hardware's side of the round trip: no
/// driver takes it (the driver's PRQ handler is not in these rows), and an ATC hit never reaches a driver.
/// </summary>
internal sealed class AtsHardwareStack : IDisposable
{
    public const ushort Rid = 0x0300;

    // Structures below the host page pool (4 GiB up) and the platform's table region (the top).
    private const ulong Root = 0x1000_0000, Context = Root + 0x1000, Dir = Root + 0x2000, PasidTable = Root + 0x3000;
    private const ulong Iq = Root + 0x4000, Prq = Root + 0x6000, Status = Root + 0x7000, EmptyPml4 = Root + 0x8000;

    private ulong _iqTail;
    private uint _waitData;

    public AtsHardwareStack()
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        Unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true });
        PciBus pci = Platform.AddPciBus();
        pci.AddDmaRemapper(Unit, includeAll: true);
        Device = pci.AddDevice(new PciDeviceSpec("0000:03:00.0") { PasidWidth = 20, Ats = true, Pri = true });
        Device.EnablePasid().ThrowIfError();
        Device.EnableAts().ThrowIfError();
        Device.EnablePri().ThrowIfError();

        Memory.PhysicalMemory m = Platform.Memory;
        for (ulong pa = Root; pa < EmptyPml4 + 0x1000; pa += 8)
        {
            m.WriteUInt64(pa, 0);
        }

        m.WriteUInt64(Root + (3 * 16), Context | 1);                               // bus 3, lower half (devfn < 128)
        m.WriteUInt64(Context, Dir | (7UL << 9) | (1UL << 4) | (1UL << 3) | (1UL << 2) | 1); // PDTS, PRE, PASIDE, DTE, P
        Unit.Write64(0x20, Root | (1UL << 10));                                     // RTADDR, TTM = scalable
        Gcmd(1u << 30);                                                              // SRTP
        Unit.Write64(0x88, 0);
        Unit.Write64(0x90, Iq | (1UL << 11) | 1);                                    // IQA: 2 pages of 256-bit descriptors
        Gcmd(1u << 26);                                                              // QIE
        Unit.Write64(0xD0, Prq);                                                     // PQA: one page, 128 descriptors
        Gcmd(1u << 31);                                                              // TE
    }

    public Platform Platform { get; }

    public VtdUnit Unit { get; }

    public PciDevice Device { get; }

    /// <summary>A first-level PASID entry (P, AW 48-bit, PGTT=001, DID 1) whose FLPTR is <paramref name="pgd"/>, or an empty PML4 when null.</summary>
    public void FirstLevelEntry(uint pasid, ulong? pgd)
    {
        Memory.PhysicalMemory m = Platform.Memory;
        m.WriteUInt64(Dir + ((ulong)(pasid >> 6) * 8), PasidTable | 1);
        ulong e = PasidTable + ((ulong)(pasid & 0x3F) * 64);
        m.WriteUInt64(e + 8, 1);
        m.WriteUInt64(e + 16, pgd ?? EmptyPml4);
        m.WriteUInt64(e, 1 | (2UL << 2) | (1UL << 6));
    }

    /// <summary>
    /// Software's half of a page request round trip, as Linux's handler does it: clear PPR, read every
    /// descriptor from PQH to PQT, answer each last-in-group request with a Success page group response and
    /// an invalidation wait (status write), move PQH, and wait for the status. Returns the requests read.
    /// </summary>
    public int ServicePageRequests()
    {
        Memory.PhysicalMemory m = Platform.Memory;
        Unit.Write32(0xDC, 1);
        ulong head = Unit.Read64(0xC0), tail = Unit.Read64(0xC8);
        int read = 0;
        while (head != tail)
        {
            ulong q0 = m.ReadUInt64(Prq + head), q1 = m.ReadUInt64(Prq + head + 8);
            if ((q1 & 4) != 0)
            {
                ulong pp = (q0 >> 8) & 1, rid = (q0 >> 16) & 0xFFFF, pasid = q0 >> 32, prgi = (q1 >> 3) & 0x1FF;
                Put(9 | (pp << 4) | (rid << 16) | (pasid << 32), 4 | (prgi << 3));
                _waitData++;
                Put(5 | (1UL << 5) | ((ulong)_waitData << 32), Status);
            }

            head = (head + 32) & 0xFFF;
            read++;
        }

        Unit.Write64(0xC0, head);
        Unit.Write64(0x88, _iqTail);
        return read == 0 || m.ReadUInt32(Status) == _waitData ? read : throw new InvalidOperationException("the invalidation wait did not complete");
    }

    public void Dispose() => Platform.Dispose();

    private void Put(ulong q0, ulong q1)
    {
        Memory.PhysicalMemory m = Platform.Memory;
        m.WriteUInt64(Iq + _iqTail, q0);
        m.WriteUInt64(Iq + _iqTail + 8, q1);
        m.WriteUInt64(Iq + _iqTail + 16, 0);
        m.WriteUInt64(Iq + _iqTail + 24, 0);
        _iqTail = (_iqTail + 32) & 0x1FFF;
    }

    private void Gcmd(uint bit) => Unit.Write32(0x18, (Unit.Read32(0x1C) & 0x96FF_FFFF) | bit);
}

/// <summary>
/// An ATC hit: <see cref="PciDevice.AtsDmaRead"/> of 64 B at ref_dma.c's pseudo-random addresses over 256
/// pages of a process (as many as the device's ATC holds), each translated once in setup, so every read
/// is a translated request from the ATC. The C row looks the page up in a 256-entry associative table
/// keyed by (PASID, page) and copies from a flat arena.
/// </summary>
[MemoryDiagnoser]
public unsafe class SvaAtcHit : IDisposable
{
    /// <summary>Pages read: the ATC's capacity.</summary>
    public const int Pages = 256;

    /// <summary>64 B reads per invocation.</summary>
    public const int Ops = 1 << 16;

    private const uint Pasid = 1;

    private readonly byte* _buffer = DmaReads.AllocBuffer(4096);
    private AtsHardwareStack? _stack;
    private ProcessAddressSpace? _mm;
    private ulong[] _vas = [];
    private SvaFloor? _floor;

    [GlobalSetup(Target = nameof(AtsRead64B))]
    public void SetupModel()
    {
        _stack = new AtsHardwareStack();
        _mm = new ProcessAddressSpace(HostPageAllocator.ForPlatform(_stack.Platform), "bench");
        SvaWorkload.MapTouched(_mm, Pages);
        _stack.FirstLevelEntry(Pasid, _mm.Pgd);
        Span<byte> b = stackalloc byte[8];
        for (int i = 0; i < Pages; i++)
        {
            if (!_stack.Device.AtsDmaRead(Pasid, SvaWorkload.VaBase + ((ulong)i << 12), b).IsOk)
            {
                throw new InvalidOperationException($"ATS read of page {i} failed");
            }
        }

        if (_stack.Device.AtcCount != Pages)
        {
            throw new InvalidOperationException($"the ATC holds {_stack.Device.AtcCount} translations, not {Pages}");
        }

        _vas = SvaWorkload.Vas(Pages, 64, Ops);
    }

    [GlobalSetup(Target = nameof(CAtsRead64B))]
    public void SetupC()
    {
        _floor = new SvaFloor();
        if (((delegate* unmanaged<nuint, ulong, uint, int>)_floor.Export("ra_setup"))(Pages, SvaWorkload.VaBase, Pasid) != 0)
        {
            throw new InvalidOperationException("C floor: ra_setup failed");
        }

        _vas = SvaWorkload.Vas(Pages, 64, Ops);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _mm?.Dispose();
        _stack?.Dispose();
        _floor?.Dispose();
        NativeMemory.AlignedFree(_buffer);
        GC.SuppressFinalize(this);
    }

    /// <summary>A 64 B read whose translation the ATC holds.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong AtsRead64B()
    {
        PciDevice dev = _stack!.Device;
        var buffer = new Span<byte>(_buffer, 64);
        ulong sink = 0;
        foreach (ulong va in _vas)
        {
            if (!dev.AtsDmaRead(Pasid, va, buffer).IsOk)
            {
                throw new InvalidOperationException($"ATS read at 0x{va:X} failed");
            }

            sink += buffer[0];
        }

        return sink;
    }

    /// <summary>The C floor: an associative lookup and a 64 B copy.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong CAtsRead64B() => _floor!.AtcRead(_vas, 64, _buffer, Pasid);
}

/// <summary>
/// A page request round trip at the hardware level: the device's ATS read is refused (the PASID's
/// first-level PML4 is empty), the device sends a page request, the unit writes the descriptor at PQT;
/// software (<see cref="AtsHardwareStack.ServicePageRequests"/>) reads PQH..PQT, moves PQH and answers
/// through the invalidation queue with a page group response and a wait; the response reaches the device.
/// The pages follow ref_dma.c's sequence over 256 pages, so most recur within an invocation, and a device
/// still waiting for a page's answer sends no second request for it: a lost response fails the row. The
/// C row does the same ring and queue work in arrays.
/// </summary>
[MemoryDiagnoser]
public unsafe class SvaPageRequest : IDisposable
{
    /// <summary>Round trips per invocation.</summary>
    public const int Ops = 1 << 10;

    private const uint Pasid = 2;
    private const int Pages = 256;

    private AtsHardwareStack? _stack;
    private ulong[] _vas = [];
    private SvaFloor? _floor;
    private delegate* unmanaged<ulong*, nuint, uint, ushort, ulong> _cRound;

    [GlobalSetup(Target = nameof(RoundTrip))]
    public void SetupModel()
    {
        _stack = new AtsHardwareStack();
        _stack.FirstLevelEntry(Pasid, null);
        _vas = SvaWorkload.Vas(Pages, 4096, Ops);
    }

    [GlobalSetup(Target = nameof(CRoundTrip))]
    public void SetupC()
    {
        _floor = new SvaFloor();
        _cRound = (delegate* unmanaged<ulong*, nuint, uint, ushort, ulong>)_floor.Export("rq_round_pass");
        if (((delegate* unmanaged<int>)_floor.Export("rq_setup"))() != 0)
        {
            throw new InvalidOperationException("C floor: rq_setup failed");
        }

        _vas = SvaWorkload.Vas(Pages, 4096, Ops);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _stack?.Dispose();
        _floor?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Refused translation → page request → descriptor → software's response → device.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong RoundTrip()
    {
        AtsHardwareStack stack = _stack!;
        PciDevice dev = stack.Device;
        Span<byte> b = stackalloc byte[8];
        ulong sink = 0;
        foreach (ulong va in _vas)
        {
            DmaResult r = dev.AtsDmaRead(Pasid, va, b);
            if (r.Status != DmaStatus.PageRequestPending || stack.ServicePageRequests() != 1)
            {
                throw new InvalidOperationException($"the round trip at 0x{va:X} did not send exactly one page request ({r.Status})");
            }

            sink += r.Address;
        }

        return sink;
    }

    /// <summary>The C floor: the same descriptor, ring and queue writes and reads.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong CRoundTrip()
    {
        fixed (ulong* p = _vas)
        {
            ulong done = _cRound(p, (nuint)_vas.Length, Pasid, AtsHardwareStack.Rid);
            return done == (ulong)_vas.Length ? done : throw new InvalidOperationException("C floor: a round trip failed");
        }
    }
}

/// <summary>
/// <see cref="IommuCore.SvaBindDevice"/> then <see cref="IommuCore.SvaUnbindDevice"/> of one process to one
/// device (5.15: PASID from the platform allocator, mmu notifier registered, first-level PASID entry; on
/// unbind the entry cleared with its PASID-cache, PASID-IOTLB and PASID device-TLB invalidations, each
/// with a wait; then <c>intel_svm_drain_prq</c>, as the device has PRI: a fenced wait, PASID-IOTLB, PASID
/// device-TLB and a draining wait). The C row writes the 64-byte PASID entry, clears it and writes the ten
/// descriptors at a queue's tail.
/// </summary>
[MemoryDiagnoser]
public unsafe class SvaBindUnbind : IDisposable
{
    /// <summary>Bind/unbind pairs per invocation.</summary>
    public const int Ops = 1 << 8;

    /// <summary>Passes per C invocation (its pair is a few ns).</summary>
    public const int CPasses = 64;

    /// <summary>Descriptors the C row writes per bind/unbind: three invalidations, each with its wait, and the PRQ drain's four.</summary>
    public const int CDescriptors = 10;

    private SvaStack? _stack;
    private SvaFloor? _floor;
    private delegate* unmanaged<nuint, uint, ulong, ushort, ulong, ushort, ulong> _cBindUnbind;

    [GlobalSetup(Target = nameof(BindUnbind))]
    public void SetupModel()
    {
        _stack = new SvaStack();
        SvaWorkload.MapTouched(_stack.Mm, 16);

        // The C row queues what the driver queues: count one bind/unbind's descriptors by the queue head.
        VtdUnit unit = _stack.Unit;
        ulong iqa = unit.Read64(0x90);
        int shift = (iqa & (1UL << 11)) != 0 ? 5 : 4;
        ulong entries = (4096UL << (int)(iqa & 7)) >> shift;
        ulong head = unit.Read64(0x80) >> shift;
        BindUnbindOnce();
        ulong queued = ((unit.Read64(0x80) >> shift) + entries - head) % entries;
        if (queued != CDescriptors)
        {
            throw new InvalidOperationException($"a bind/unbind queued {queued} descriptors; the C row writes {CDescriptors}");
        }
    }

    [GlobalSetup(Target = nameof(CBindUnbind))]
    public void SetupC()
    {
        _floor = new SvaFloor();
        _cBindUnbind = (delegate* unmanaged<nuint, uint, ulong, ushort, ulong, ushort, ulong>)_floor.Export("rb_bind_unbind_pass");
        if (((delegate* unmanaged<int>)_floor.Export("rq_setup"))() != 0)
        {
            throw new InvalidOperationException("C floor: rq_setup failed");
        }
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _stack?.Dispose();
        _floor?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>One bind and its unbind.</summary>
    [Benchmark(OperationsPerInvoke = Ops)]
    public ulong BindUnbind()
    {
        ulong sink = 0;
        for (int i = 0; i < Ops; i++)
        {
            sink += BindUnbindOnce();
        }

        return sink;
    }

    /// <summary>The C floor: the PASID entry written and cleared, ten descriptors queued.</summary>
    [Benchmark(OperationsPerInvoke = Ops * CPasses)]
    public ulong CBindUnbind()
    {
        ulong written = _cBindUnbind(Ops * CPasses, 1, SvaWorkload.VaBase >> 12 << 12, 1, 0, 0x0018);
        return written == (ulong)CDescriptors * Ops * CPasses ? written : throw new InvalidOperationException("C floor: bind/unbind pass");
    }

    private uint BindUnbindOnce()
    {
        IommuCore iommu = _stack!.Iommu;
        if (iommu.SvaBindDevice(_stack.Device, _stack.Mm, null, out IommuSva? handle) != Errno.None)
        {
            throw new InvalidOperationException("bind failed");
        }

        uint pasid = iommu.SvaGetPasid(handle!);
        iommu.SvaUnbindDevice(handle!);
        return pasid;
    }
}

/// <summary>ref_sva_shim.c loaded: the SVA classes' C floors.</summary>
internal sealed unsafe class SvaFloor : IDisposable
{
    private readonly CFloor.Library _library = CFloor.Load(CFloor.SvaShim);
    private readonly delegate* unmanaged<ulong*, nuint, nuint, byte*, ulong> _walkRead;
    private readonly delegate* unmanaged<ulong*, nuint, nuint, byte*, uint, ulong> _atcRead;

    public SvaFloor()
    {
        _walkRead = (delegate* unmanaged<ulong*, nuint, nuint, byte*, ulong>)_library.Export("rs_read_pass");
        _atcRead = (delegate* unmanaged<ulong*, nuint, nuint, byte*, uint, ulong>)_library.Export("ra_read_pass");
    }

    /// <summary>An entry point of the shim.</summary>
    public nint Export(string name) => _library.Export(name);

    /// <summary><c>rs_read_pass</c>: a first-level walk and a copy per address; throws when a walk refused.</summary>
    public ulong WalkRead(ulong[] vas, nuint length, byte* buffer)
    {
        fixed (ulong* p = vas)
        {
            ulong sink = _walkRead(p, (nuint)vas.Length, length, buffer);
            return sink != 0 ? sink : throw new InvalidOperationException("C floor: a walk refused");
        }
    }

    /// <summary><c>ra_read_pass</c>: an ATC lookup and a copy per address; throws when one missed.</summary>
    public ulong AtcRead(ulong[] vas, nuint length, byte* buffer, uint pasid)
    {
        fixed (ulong* p = vas)
        {
            ulong sink = _atcRead(p, (nuint)vas.Length, length, buffer, pasid);
            return sink != 0 ? sink : throw new InvalidOperationException("C floor: an ATC lookup missed");
        }
    }

    public void Dispose() => _library.Dispose();
}
