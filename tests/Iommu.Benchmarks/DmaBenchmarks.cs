using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Benchmarks;

/// <summary>
/// The whole stack for the DMA rows, composed as a kernel boots: a platform, a PCI bus, one VT-d unit
/// with the intel-iommu driver, devices in unmanaged domains, pages mapped 4K at a time through
/// <see cref="IommuCore.Map"/>.
/// </summary>
internal sealed class DmaStack : IDisposable
{
    /// <summary>A page of ones: what the C arenas hold.</summary>
    public static readonly byte[] Ones = CreateOnes();

    public DmaStack(VtdConfig config)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, config);
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Pci.SetIommuOps(new IntelIommu(Platform, Unit)).ThrowIfError();
    }

    public Platform Platform { get; }

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IommuCore Iommu => Platform.Iommu;

    /// <summary>A device attached to a fresh unmanaged domain (untagged requests; RID_PASID on a scalable unit).</summary>
    public (PciDevice Device, IDomain Domain) AddDevice(string bdf)
    {
        PciDevice dev = Pci.AddDevice(new PciDeviceSpec(bdf));
        IDomain domain = Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain_alloc failed");
        Iommu.AttachDevice(domain, dev).ThrowIfError();
        return (dev, domain);
    }

    /// <summary>A Scalable-IOV device with an aux domain: requests tagged with the domain's PASID.</summary>
    public (PciDevice Device, IDomain Domain, uint Pasid) AddAuxDevice(string bdf)
    {
        PciDevice dev = Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, ScalableIov = true });
        Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable).ThrowIfError();
        IDomain domain = Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain_alloc failed");
        Iommu.AttachDeviceAux(domain, dev).ThrowIfError();
        int pasid = Iommu.AuxGetPasid(domain, dev);
        return pasid > 0 ? (dev, domain, (uint)pasid) : throw new InvalidOperationException($"aux_get_pasid returned {pasid}");
    }

    /// <summary>
    /// Maps page i of [first, first + count) 4K by 4K at ref_dma.c's IOVA (DmaIovaBase + i × 4K) to
    /// physBase + (i - first) × 4K, and fills each page with ones as the C arena is: a page the model
    /// never wrote reads as zeros without touching memory.
    /// </summary>
    public void MapPages(IDomain domain, int first, int count, ulong physBase)
    {
        for (int i = 0; i < count; i++)
        {
            ulong pa = physBase + ((ulong)i << 12);
            Iommu.Map(domain, Workload.DmaIovaBase + ((ulong)(first + i) << 12), pa, 4096, IommuProt.Read | IommuProt.Write).ThrowIfError();
            Platform.Memory.Write(pa, Ones);
        }
    }

    public void Dispose() => Platform.Dispose();

    private static byte[] CreateOnes()
    {
        var ones = new byte[4096];
        ones.AsSpan().Fill(1);
        return ones;
    }
}

/// <summary>
/// Device reads through the whole stack (<see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/>: remapper lookup, context,
/// IOTLB or table walk, copy) at ref_dma.c's pseudo-random IOVAs over <see cref="Pages"/> mapped 4K
/// pages: 64 B and 4 KiB, on a legacy unit, on a scalable unit (untagged requests through RID_PASID)
/// and with the PASID of an aux domain. The C rows run ref_dma.c's walk and memcpy over the same IOVA
/// array (no IOTLB, no locks). One class per page count because OperationsPerInvoke is a constant.
/// </summary>
[MemoryDiagnoser]
public abstract unsafe class DmaReadWorkload : IDisposable
{
    /// <summary>64 B reads per invocation (over 100 µs even for the C floor).</summary>
    public const int Ops64 = 1 << 16;

    /// <summary>4 KiB reads per invocation.</summary>
    public const int Ops4K = 1 << 14;

    private readonly byte* _buffer = DmaReads.AllocBuffer(4096);
    private DmaStack? _stack;
    private PciDevice _dev = null!;
    private uint? _pasid;
    private ulong[] _iovas64 = [];
    private ulong[] _iovas4K = [];
    private DmaFloor? _floor;

    /// <summary>Mapped 4K pages the reads land in.</summary>
    protected abstract int Pages { get; }

    [GlobalSetup(Targets = [nameof(LegacyRead64B), nameof(LegacyRead4K)])]
    public void SetupLegacy() => SetupModel(VtdConfig.Legacy48Bit, aux: false);

    [GlobalSetup(Targets = [nameof(ScalableRead64B), nameof(ScalableRead4K)])]
    public void SetupScalable() => SetupModel(VtdConfig.ScalableMode48Bit, aux: false);

    [GlobalSetup(Targets = [nameof(PasidRead64B), nameof(PasidRead4K)])]
    public void SetupPasid() => SetupModel(VtdConfig.ScalableMode48Bit, aux: true);

    [GlobalSetup(Targets = [nameof(CRead64B), nameof(CRead4K)])]
    public void SetupC()
    {
        _floor = new DmaFloor((nuint)Pages);
        CreateIovas();
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _stack?.Dispose();
        _floor?.Dispose();
        NativeMemory.AlignedFree(_buffer);
        GC.SuppressFinalize(this);
    }

    /// <summary>64 B reads on a legacy unit.</summary>
    [Benchmark(OperationsPerInvoke = Ops64)]
    public ulong LegacyRead64B() => Read(_iovas64, 64);

    /// <summary>4 KiB reads on a legacy unit.</summary>
    [Benchmark(OperationsPerInvoke = Ops4K)]
    public ulong LegacyRead4K() => Read(_iovas4K, 4096);

    /// <summary>64 B untagged reads on a scalable unit (the context's RID_PASID entry).</summary>
    [Benchmark(OperationsPerInvoke = Ops64)]
    public ulong ScalableRead64B() => Read(_iovas64, 64);

    /// <summary>4 KiB untagged reads on a scalable unit.</summary>
    [Benchmark(OperationsPerInvoke = Ops4K)]
    public ulong ScalableRead4K() => Read(_iovas4K, 4096);

    /// <summary>64 B reads tagged with an aux domain's PASID.</summary>
    [Benchmark(OperationsPerInvoke = Ops64)]
    public ulong PasidRead64B() => Read(_iovas64, 64);

    /// <summary>4 KiB reads tagged with an aux domain's PASID.</summary>
    [Benchmark(OperationsPerInvoke = Ops4K)]
    public ulong PasidRead4K() => Read(_iovas4K, 4096);

    /// <summary>The C floor of the 64 B rows.</summary>
    [Benchmark(OperationsPerInvoke = Ops64)]
    public ulong CRead64B() => CRead(_iovas64, 64);

    /// <summary>The C floor of the 4 KiB rows.</summary>
    [Benchmark(OperationsPerInvoke = Ops4K)]
    public ulong CRead4K() => CRead(_iovas4K, 4096);

    private void SetupModel(VtdConfig config, bool aux)
    {
        _stack = new DmaStack(config);
        IDomain domain;
        if (aux)
        {
            (_dev, domain, uint pasid) = _stack.AddAuxDevice("0000:00:03.0");
            _pasid = pasid;
        }
        else
        {
            (_dev, domain) = _stack.AddDevice("0000:00:03.0");
        }

        _stack.MapPages(domain, 0, Pages, Workload.PhysBase);
        CreateIovas();
    }

    private void CreateIovas()
    {
        _iovas64 = Workload.DmaIovas(Pages, 64, Ops64);
        _iovas4K = Workload.DmaIovas(Pages, 4096, Ops4K);
    }

    private ulong Read(ulong[] iovas, int length) => DmaReads.Read(_dev, _pasid, iovas, new Span<byte>(_buffer, length));

    private ulong CRead(ulong[] iovas, int length) => _floor!.Read(iovas, (nuint)length, _buffer);
}

/// <summary>1,024 pages: tables and IOTLB entries stay cached.</summary>
public class DmaRead1K : DmaReadWorkload
{
    protected override int Pages => 1 << 10;
}

/// <summary>65,536 pages: more than the IOTLB holds, so most reads walk the tables.</summary>
public class DmaRead64K : DmaReadWorkload
{
    protected override int Pages => 1 << 16;
}

/// <summary>
/// Aggregate throughput of 64 B reads by two devices in two domains on one scalable unit: one thread
/// issuing both devices' reads in turn, then two threads, one per device, at once. Each op is one
/// read, so 2-thread ns/op below 1-thread ns/op means the reads overlapped. The C rows run the same
/// reads with ref_dma.c's walk (both domains' pages in one table, the second device's 1,024 pages
/// above the first's) on the same threads.
/// </summary>
[MemoryDiagnoser]
public unsafe class DmaThreads : IDisposable
{
    /// <summary>Mapped pages per device.</summary>
    public const int Pages = 1 << 10;

    /// <summary>Reads per device per invocation.</summary>
    public const int PerThread = 1 << 15;

    private const int Length = 64;

    // A page each: no false sharing between the two threads' destinations.
    private readonly byte* _bufferA = DmaReads.AllocBuffer(4096);
    private readonly byte* _bufferB = DmaReads.AllocBuffer(4096);
    private DmaStack? _stack;
    private PciDevice _devA = null!;
    private PciDevice _devB = null!;
    private ulong[] _iovasA = [];
    private ulong[] _iovasB = [];
    private DmaFloor? _floor;
    private Worker? _worker;

    [GlobalSetup(Targets = [nameof(OneThread64B), nameof(TwoThreads64B)])]
    public void SetupModel()
    {
        _stack = new DmaStack(VtdConfig.ScalableMode48Bit);
        (_devA, IDomain a) = _stack.AddDevice("0000:00:03.0");
        (_devB, IDomain b) = _stack.AddDevice("0000:00:04.0");
        _stack.MapPages(a, 0, Pages, Workload.PhysBase);
        _stack.MapPages(b, 0, Pages, Workload.PhysBase + ((ulong)Pages << 12));
        CreateIovas(shiftB: 0);
        _worker = new Worker(ReadB);
    }

    [GlobalSetup(Targets = [nameof(COneThread64B), nameof(CTwoThreads64B)])]
    public void SetupC()
    {
        _floor = new DmaFloor(2 * Pages);

        // One C table holds both domains: the second device's pages sit above the first's.
        CreateIovas(shiftB: (ulong)Pages << 12);
        _worker = new Worker(CReadB);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _worker?.Dispose();
        _stack?.Dispose();
        _floor?.Dispose();
        NativeMemory.AlignedFree(_bufferA);
        NativeMemory.AlignedFree(_bufferB);
        GC.SuppressFinalize(this);
    }

    /// <summary>Both devices' reads on one thread.</summary>
    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public ulong OneThread64B() => ReadA() + ReadB();

    /// <summary>Each device's reads on its own thread, at once.</summary>
    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public ulong TwoThreads64B()
    {
        _worker!.Start();
        ulong a = ReadA();
        return a + _worker.Join();
    }

    /// <summary>The C floor of <see cref="OneThread64B"/>.</summary>
    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public ulong COneThread64B() => CReadA() + CReadB();

    /// <summary>The C floor of <see cref="TwoThreads64B"/>.</summary>
    [Benchmark(OperationsPerInvoke = 2 * PerThread)]
    public ulong CTwoThreads64B()
    {
        _worker!.Start();
        ulong a = CReadA();
        return a + _worker.Join();
    }

    // The first PerThread IOVAs of ref_dma.c's sequence for device A, the next PerThread for B.
    private void CreateIovas(ulong shiftB)
    {
        ulong[] all = Workload.DmaIovas(Pages, Length, 2 * PerThread);
        _iovasA = GC.AllocateArray<ulong>(PerThread, pinned: true);
        _iovasB = GC.AllocateArray<ulong>(PerThread, pinned: true);
        all.AsSpan(0, PerThread).CopyTo(_iovasA);
        for (int i = 0; i < PerThread; i++)
        {
            _iovasB[i] = all[PerThread + i] + shiftB;
        }
    }

    private ulong ReadA() => DmaReads.Read(_devA, null, _iovasA, new Span<byte>(_bufferA, Length));

    private ulong ReadB() => DmaReads.Read(_devB, null, _iovasB, new Span<byte>(_bufferB, Length));

    private ulong CReadA() => CRead(_iovasA, _bufferA);

    private ulong CReadB() => CRead(_iovasB, _bufferB);

    private ulong CRead(ulong[] iovas, byte* buffer) => _floor!.Read(iovas, Length, buffer);

    /// <summary>A thread kept for the run, so the 2-thread rows time the reads, not thread creation.</summary>
    private sealed class Worker : IDisposable
    {
        private readonly Func<ulong> _job;
        private readonly Thread _thread;
        private readonly ManualResetEventSlim _go = new();
        private readonly ManualResetEventSlim _done = new();
        private volatile bool _stop;
        private ulong _result;
        private Exception? _error;

        public Worker(Func<ulong> job)
        {
            _job = job;
            _thread = new Thread(Loop) { IsBackground = true, Name = "DmaThreads worker" };
            _thread.Start();
        }

        public void Start() => _go.Set();

        public ulong Join()
        {
            _done.Wait();
            _done.Reset();
            return _error is null ? _result : throw new InvalidOperationException("the worker's reads failed", _error);
        }

        public void Dispose()
        {
            _stop = true;
            _go.Set();
            _thread.Join();
            _go.Dispose();
            _done.Dispose();
        }

        private void Loop()
        {
            while (true)
            {
                _go.Wait();
                _go.Reset();
                if (_stop)
                {
                    return;
                }

                try
                {
                    _result = _job();
                }
                catch (Exception e)
                {
                    _error = e;
                }

                _done.Set();
            }
        }
    }
}

/// <summary>
/// <c>iommu_unmap</c> of one 4K page (page-table clear, then the page-selective IOTLB flush through the
/// invalidation queue) with an empty IOTLB and with one the device filled first (IotlbCapacity pages
/// read once). Every op unmaps a mapped page and maps it back, so no iteration setup is needed; the
/// pages unmapped are 1,024 others, never read, so the IOTLB stays full. The C row clears the leaf
/// entry and maps the page back on ref_dma.c's table (no IOTLB to flush).
/// </summary>
[MemoryDiagnoser]
public unsafe class DmaUnmap : IDisposable
{
    /// <summary>Pages unmapped and mapped back, in turn.</summary>
    public const int Rotating = 1 << 10;

    /// <summary>Passes over the rotating pages per C invocation (the C op is too short for one pass to last 100 µs).</summary>
    public const int CPasses = 16;

    private DmaStack? _stack;
    private IDomain _domain = null!;
    private ulong[] _iovas = [];
    private int _fill;
    private DmaFloor? _floor;
    private delegate* unmanaged<ulong*, nuint, ulong> _cUnmapRemap;

    [GlobalSetup(Target = nameof(UnmapRemap4KIotlbEmpty))]
    public void SetupEmpty() => SetupModel(fillIotlb: false);

    [GlobalSetup(Target = nameof(UnmapRemap4KIotlbFull))]
    public void SetupFull() => SetupModel(fillIotlb: true);

    [GlobalSetup(Target = nameof(CUnmapRemap4K))]
    public void SetupC()
    {
        _fill = VtdConfig.ScalableMode48Bit.IotlbCapacity;
        _floor = new DmaFloor((nuint)(_fill + Rotating));
        _cUnmapRemap = (delegate* unmanaged<ulong*, nuint, ulong>)_floor.Export("rd_unmap_remap_pass");

        CreateIovas();
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _stack?.Dispose();
        _floor?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Unmap and map back one 4K page; nothing in the IOTLB.</summary>
    [Benchmark(OperationsPerInvoke = Rotating)]
    public void UnmapRemap4KIotlbEmpty() => UnmapRemap();

    /// <summary>Unmap and map back one 4K page; the IOTLB full of the domain's other pages.</summary>
    [Benchmark(OperationsPerInvoke = Rotating)]
    public void UnmapRemap4KIotlbFull()
    {
        UnmapRemap();

        // The row means nothing if the flushes emptied the IOTLB; one lock per 1,024 ops.
        if (_stack!.Unit.Statistics.IotlbEntries < _fill * 3 / 4)
        {
            throw new InvalidOperationException("the unmaps emptied the IOTLB");
        }
    }

    /// <summary>The C floor: clear the leaf entry, map it back.</summary>
    [Benchmark(OperationsPerInvoke = Rotating * CPasses)]
    public ulong CUnmapRemap4K()
    {
        ulong total = 0;
        fixed (ulong* p = _iovas)
        {
            for (int i = 0; i < CPasses; i++)
            {
                total += _cUnmapRemap(p, Rotating) is not 0 and ulong bytes ? bytes : throw new InvalidOperationException("C floor: unmap of an unmapped page");
            }
        }

        return total;
    }

    private void SetupModel(bool fillIotlb)
    {
        _stack = new DmaStack(VtdConfig.ScalableMode48Bit);
        _fill = _stack.Unit.Config.IotlbCapacity;
        (PciDevice dev, _domain) = _stack.AddDevice("0000:00:03.0");
        _stack.MapPages(_domain, 0, _fill + Rotating, Workload.PhysBase);
        CreateIovas();
        if (fillIotlb)
        {
            Span<byte> b = stackalloc byte[8];
            for (int i = 0; i < _fill; i++)
            {
                dev.DmaRead(null, Workload.DmaIovaBase + ((ulong)i << 12), b);
            }

            if (_stack.Unit.Statistics.IotlbEntries < _fill * 3 / 4)
            {
                throw new InvalidOperationException($"reading {_fill} pages left {_stack.Unit.Statistics.IotlbEntries} IOTLB entries");
            }
        }
    }

    // The rotating pages (above the ones that fill the IOTLB), in ref_pagetable.c's shuffled order.
    private void CreateIovas()
    {
        ulong[] order = Workload.Order(Rotating);
        _iovas = GC.AllocateArray<ulong>(Rotating, pinned: true);
        for (int i = 0; i < Rotating; i++)
        {
            _iovas[i] = Workload.DmaIovaBase + (((ulong)_fill + order[i]) << 12);
        }
    }

    private void UnmapRemap()
    {
        IommuCore iommu = _stack!.Iommu;
        IDomain domain = _domain;
        foreach (ulong iova in _iovas)
        {
            if (iommu.Unmap(domain, iova, 4096) != 4096
                || iommu.Map(domain, iova, Workload.PhysBase + (iova - Workload.DmaIovaBase), 4096, IommuProt.Read | IommuProt.Write) != Errno.None)
            {
                throw new InvalidOperationException($"unmap or map of 0x{iova:X} failed");
            }
        }
    }
}

/// <summary>
/// A scatter-gather read of 16 × 4 KiB (<see cref="VtdUnit.Gather"/>) at ref_dma.c's page-aligned IOVAs
/// over 1,024 pages on a scalable unit, beside the same 16 pages read with 16 <see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/>
/// calls. The C row walks and copies the 16 pages of each gather.
/// </summary>
[MemoryDiagnoser]
public unsafe class DmaGather : IDisposable
{
    /// <summary>Mapped pages.</summary>
    public const int Pages = 1 << 10;

    /// <summary>Segments per gather.</summary>
    public const int Segments = 16;

    /// <summary>Gathers per invocation.</summary>
    public const int Gathers = 1 << 10;

    private readonly byte* _buffer = DmaReads.AllocBuffer(Segments * 4096);
    private DmaStack? _stack;
    private PciDevice _dev = null!;
    private ulong[] _iovas = [];
    private DmaSegment[] _segments = [];
    private DmaFloor? _floor;
    private delegate* unmanaged<ulong*, nuint, nuint, nuint, byte*, ulong> _cGather;

    [GlobalSetup(Targets = [nameof(Gather16x4K), nameof(Read16x4K)])]
    public void SetupModel()
    {
        _stack = new DmaStack(VtdConfig.ScalableMode48Bit);
        (_dev, IDomain domain) = _stack.AddDevice("0000:00:03.0");
        _stack.MapPages(domain, 0, Pages, Workload.PhysBase);
        CreateIovas();
    }

    [GlobalSetup(Target = nameof(CGather16x4K))]
    public void SetupC()
    {
        _floor = new DmaFloor(Pages);
        _cGather = (delegate* unmanaged<ulong*, nuint, nuint, nuint, byte*, ulong>)_floor.Export("rd_gather_pass");

        CreateIovas();
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _stack?.Dispose();
        _floor?.Dispose();
        NativeMemory.AlignedFree(_buffer);
        GC.SuppressFinalize(this);
    }

    /// <summary>One <see cref="VtdUnit.Gather"/> of 16 pages.</summary>
    [Benchmark(OperationsPerInvoke = Gathers)]
    public ulong Gather16x4K()
    {
        VtdUnit unit = _stack!.Unit;
        ushort rid = _dev.RequesterId;
        ReadOnlySpan<DmaSegment> segments = _segments;
        var buffer = new Span<byte>(_buffer, Segments * 4096);
        ulong sink = 0;
        for (int g = 0; g < Gathers; g++)
        {
            if (!unit.Gather(rid, null, segments.Slice(g * Segments, Segments), buffer).IsOk)
            {
                throw new InvalidOperationException("gather failed");
            }

            sink += _buffer[0];
        }

        return sink;
    }

    /// <summary>The same 16 pages with 16 device reads.</summary>
    [Benchmark(OperationsPerInvoke = Gathers)]
    public ulong Read16x4K()
    {
        PciDevice dev = _dev;
        ulong[] iovas = _iovas;
        var buffer = new Span<byte>(_buffer, Segments * 4096);
        ulong sink = 0;
        for (int g = 0; g < Gathers; g++)
        {
            for (int s = 0; s < Segments; s++)
            {
                if (!dev.DmaRead(null, iovas[(g * Segments) + s], buffer.Slice(s * 4096, 4096)).IsOk)
                {
                    throw new InvalidOperationException("read failed");
                }
            }

            sink += _buffer[0];
        }

        return sink;
    }

    /// <summary>The C floor: 16 walks and 16 copies of 4 KiB per gather.</summary>
    [Benchmark(OperationsPerInvoke = Gathers)]
    public ulong CGather16x4K()
    {
        fixed (ulong* p = _iovas)
        {
            ulong sink = _cGather(p, Gathers, Segments, 4096, _buffer);
            return sink != 0 ? sink : throw new InvalidOperationException("C floor: an IOVA was not mapped");
        }
    }

    private void CreateIovas()
    {
        _iovas = Workload.DmaIovas(Pages, 4096, Gathers * Segments);
        _segments = Array.ConvertAll(_iovas, iova => new DmaSegment(iova, 4096));
    }
}

/// <summary>ref_dma.c loaded through its shim, its table set up for a page count: the DMA classes' C floor.</summary>
internal sealed unsafe class DmaFloor : IDisposable
{
    private readonly CFloor.Library _library = CFloor.Load(CFloor.DmaShim);
    private readonly delegate* unmanaged<ulong*, nuint, nuint, byte*, ulong> _read;

    /// <summary>Loads the shim and runs <c>rd_setup(pages)</c>.</summary>
    public DmaFloor(nuint pages)
    {
        _read = (delegate* unmanaged<ulong*, nuint, nuint, byte*, ulong>)_library.Export("rd_read_pass");
        if (((delegate* unmanaged<nuint, int>)_library.Export("rd_setup"))(pages) != 0)
        {
            _library.Dispose();
            throw new InvalidOperationException("C floor: rd_setup could not allocate");
        }
    }

    /// <summary>Another entry point of the shim (the unmap and gather passes).</summary>
    public nint Export(string name) => _library.Export(name);

    /// <summary><c>rd_read_pass</c>: a walk and a copy of <paramref name="length"/> bytes per IOVA; throws if one was not mapped.</summary>
    public ulong Read(ulong[] iovas, nuint length, byte* buffer)
    {
        fixed (ulong* p = iovas)
        {
            ulong sink = _read(p, (nuint)iovas.Length, length, buffer);
            return sink != 0 ? sink : throw new InvalidOperationException("C floor: an IOVA was not mapped");
        }
    }

    public void Dispose() => _library.Dispose();
}

/// <summary>The C# side of the read rows: the device's reads over an IOVA array, each checked.</summary>
internal static unsafe class DmaReads
{
    /// <summary>
    /// A page-aligned destination, shared by a class's C# and C rows: the copy's speed depends on the
    /// destination's alignment, and a managed array's data is not aligned beyond 8 bytes.
    /// </summary>
    public static byte* AllocBuffer(int length) => (byte*)NativeMemory.AlignedAlloc((nuint)length, 4096);

    public static ulong Read(PciDevice dev, uint? pasid, ulong[] iovas, Span<byte> buffer)
    {
        ulong sink = 0;
        foreach (ulong iova in iovas)
        {
            if (!dev.DmaRead(pasid, iova, buffer).IsOk)
            {
                Fail(iova);
            }

            sink += buffer[0];
        }

        return sink;
    }

    private static void Fail(ulong iova) => throw new InvalidOperationException($"DMA read at 0x{iova:X} failed");
}
