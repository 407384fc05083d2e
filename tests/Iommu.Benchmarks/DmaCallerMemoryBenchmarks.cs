using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.Benchmarks;

/// <summary>
/// An emulator's DMA path on memory it owns against memory the library owns (issue 17): the same
/// tables, the same unit state and the same 1,024 mapped pages, read 64 B and 4 KiB at ref_dma.c's
/// pseudo-random IOVAs through <see cref="VtdUnit.Read(ushort, uint?, ulong, Span{byte})"/> (the requester-id entry an emulator calls).
/// The caller-owned copy is a <see cref="PhysicalMemory"/> over two host blocks (the data pages and the
/// table region, a hole between and around them) into which the owned memory's bytes were copied and
/// whose unit was restored from the owned unit's <see cref="VtdUnit.SaveState"/>. C rows as in
/// <see cref="DmaReadWorkload"/>.
/// </summary>
[MemoryDiagnoser]
public unsafe class DmaCallerMemory : IDisposable
{
    private const int Pages = 1 << 10;

    private readonly byte* _buffer = DmaReads.AllocBuffer(4096);
    private readonly List<nint> _host = [];
    private DmaStack? _stack;
    private PhysicalMemory? _callerMemory;
    private VtdUnit _unit = null!;
    private ushort _rid;
    private ulong[] _iovas64 = [];
    private ulong[] _iovas4K = [];
    private DmaFloor? _floor;

    [GlobalSetup(Targets = [nameof(OwnedRead64B), nameof(OwnedRead4K)])]
    public void SetupOwned()
    {
        Build();
        _unit = _stack!.Unit;
    }

    [GlobalSetup(Targets = [nameof(GuestRamRead64B), nameof(GuestRamRead4K)])]
    public void SetupCaller()
    {
        Build();
        PhysicalMemory owned = _stack!.Platform.Memory;
        ulong tableBase = _stack.Platform.Frames.RegionBase;
        ulong tableSize = _stack.Platform.Frames.RegionSize;
        HostMemoryRange data = Copy(owned, Workload.PhysBase, (ulong)Pages << 12);
        HostMemoryRange tables = Copy(owned, tableBase, tableSize);
        _callerMemory = new PhysicalMemory(owned.Size, [data, tables]);
        _unit = new VtdUnit(_callerMemory, VtdConfig.Legacy48Bit);
        _unit.RestoreState(_stack.Unit.SaveState());
    }

    [GlobalSetup(Targets = [nameof(CRead64B), nameof(CRead4K)])]
    public void SetupC()
    {
        _floor = new DmaFloor(Pages);
        CreateIovas();
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _callerMemory?.Dispose();
        _stack?.Dispose();
        foreach (nint p in _host)
        {
            NativeMemory.AlignedFree((void*)p);
        }

        _host.Clear();
        _floor?.Dispose();
        NativeMemory.AlignedFree(_buffer);
        GC.SuppressFinalize(this);
    }

    /// <summary>64 B reads, memory the library owns.</summary>
    [Benchmark(OperationsPerInvoke = DmaReadWorkload.Ops64)]
    public ulong OwnedRead64B() => Read(_iovas64, 64);

    /// <summary>64 B reads, memory the caller owns.</summary>
    [Benchmark(OperationsPerInvoke = DmaReadWorkload.Ops64)]
    public ulong GuestRamRead64B() => Read(_iovas64, 64);

    /// <summary>4 KiB reads, memory the library owns.</summary>
    [Benchmark(OperationsPerInvoke = DmaReadWorkload.Ops4K)]
    public ulong OwnedRead4K() => Read(_iovas4K, 4096);

    /// <summary>4 KiB reads, memory the caller owns.</summary>
    [Benchmark(OperationsPerInvoke = DmaReadWorkload.Ops4K)]
    public ulong GuestRamRead4K() => Read(_iovas4K, 4096);

    /// <summary>The C floor of the 64 B rows.</summary>
    [Benchmark(OperationsPerInvoke = DmaReadWorkload.Ops64)]
    public ulong CRead64B() => CRead(_iovas64, 64);

    /// <summary>The C floor of the 4 KiB rows.</summary>
    [Benchmark(OperationsPerInvoke = DmaReadWorkload.Ops4K)]
    public ulong CRead4K() => CRead(_iovas4K, 4096);

    private void Build()
    {
        _stack = new DmaStack(VtdConfig.Legacy48Bit);
        (PciDevice dev, IDomain domain) = _stack.AddDevice("0000:00:03.0");
        _rid = dev.RequesterId;
        _stack.MapPages(domain, 0, Pages, Workload.PhysBase);
        CreateIovas();
    }

    // A 2 MiB-aligned host block holding a copy of [pa, pa + size) of the owned memory.
    private HostMemoryRange Copy(PhysicalMemory from, ulong pa, ulong size)
    {
        nint host = (nint)NativeMemory.AlignedAlloc((nuint)size, 2 << 20);
        _host.Add(host);
        for (ulong off = 0; off < size; off += 1 << 20)
        {
            from.Read(pa + off, new Span<byte>((byte*)host + off, (int)Math.Min(1UL << 20, size - off)));
        }

        return new HostMemoryRange(pa, size, host);
    }

    private void CreateIovas()
    {
        _iovas64 = Workload.DmaIovas(Pages, 64, DmaReadWorkload.Ops64);
        _iovas4K = Workload.DmaIovas(Pages, 4096, DmaReadWorkload.Ops4K);
    }

    private ulong Read(ulong[] iovas, int length)
    {
        var buffer = new Span<byte>(_buffer, length);
        ulong sink = 0;
        foreach (ulong iova in iovas)
        {
            if (!_unit.Read(_rid, null, iova, buffer).IsOk)
            {
                throw new InvalidOperationException($"DMA read at 0x{iova:X} failed");
            }

            sink += buffer[0];
        }

        return sink;
    }

    private ulong CRead(ulong[] iovas, int length) => _floor!.Read(iovas, (nuint)length, _buffer);
}
