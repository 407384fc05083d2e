using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Issue 14 item 5: <see cref="Platform.Dispose"/> races IommuCore map/unmap/iova_to_phys, PciDevice
/// DMA and VfioContainer MAP_DMA/UNMAP_DMA on other threads, over many rounds with random timing.
/// Every call succeeds, returns an errno, or throws <see cref="ObjectDisposedException"/>; once a
/// thread has seen the exception every later call throws it too; the process never crashes (before
/// the fix, an access violation in the freed native memory killed the test host).
/// </summary>
public sealed class DisposeRaceTests(ITestOutputHelper output)
{
    private const ulong DmaIova = 0x10_0000;
    private const ulong MapIova = 0x4000_0000;
    private const ulong VfioIova = 0x8000_0000;

    [Fact]
    public void Dispose_racing_map_unmap_dma_and_ioctls_ends_each_call_cleanly()
    {
        int rounds = (int)Math.Clamp(ReliabilityBudget.Ops / 1000, 60, 1000);
        ulong seed = ReliabilityBudget.Seed(0xD15);
        var rng = new Random((int)seed);
        var errors = new ConcurrentQueue<string>();
        int crossed = 0;
        long calls = 0, disposed = 0;
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            var world = new World();
            int delayUs = rng.Next(0, 3000);
            using var start = new Barrier(4);
            var sawOk = new bool[3];
            var sawOde = new bool[3];

            void Run(int id, Func<int, object?> op)
            {
                var local = new Random((int)seed ^ (round * 31) ^ id);
                start.SignalAndWait();
                for (int i = 0; i < 200_000; i++)
                {
                    try
                    {
                        op(local.Next());
                        if (sawOde[id])
                        {
                            errors.Enqueue($"round {round} worker {id}: a call succeeded after one threw ObjectDisposedException");
                            return;
                        }

                        sawOk[id] = true;
                        Interlocked.Increment(ref calls);
                    }
                    catch (ObjectDisposedException)
                    {
                        sawOde[id] = true;
                        Interlocked.Increment(ref disposed);
                        if (i > 0 && local.Next(4) == 0)
                        {
                            return;
                        }
                    }
                    catch (Exception ex) when (ex is not OutOfMemoryException)
                    {
                        errors.Enqueue($"round {round} worker {id}: {ex.GetType().Name}: {ex.Message}");
                        return;
                    }

                    if (sawOde[id] && i > 10)
                    {
                        return;
                    }
                }
            }

            Thread[] workers =
            [
                new(() => Run(0, r => world.CoreOp(r))),
                new(() => Run(1, world.DmaOp)),
                new(() => Run(2, world.VfioOp)),
            ];
            foreach (Thread t in workers)
            {
                t.Start();
            }

            start.SignalAndWait();
            SpinFor(delayUs);
            world.Platform.Dispose();
            foreach (Thread t in workers)
            {
                t.Join();
            }

            if (sawOk.Any(b => b) && sawOde.Any(b => b))
            {
                crossed++;
            }

            // After Dispose every entry point throws, errno-returning ones included.
            Assert.Throws<ObjectDisposedException>(() => world.Platform.Iommu.Map(world.Domain, MapIova, 0x2_0000_0000, 4096, IommuProt.Read));
            Assert.Throws<ObjectDisposedException>(() => world.Dev.DmaRead(null, DmaIova, new byte[8]));
            Assert.Throws<ObjectDisposedException>(() => world.Container.MapDma(new VfioIommuType1DmaMap(32, 3, world.Va, VfioIova, 4096)));
        }

        output.WriteLine($"{rounds} rounds, {calls} calls completed, {disposed} ObjectDisposedException, {crossed} rounds where Dispose landed among running calls");
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        Assert.True(crossed >= Math.Max(5, rounds / 10), $"Dispose landed among running calls in only {crossed} of {rounds} rounds: the race was not exercised");
    }

    private static void SpinFor(int microseconds)
    {
        long until = System.Diagnostics.Stopwatch.GetTimestamp() + (microseconds * System.Diagnostics.Stopwatch.Frequency / 1_000_000);
        while (System.Diagnostics.Stopwatch.GetTimestamp() < until)
        {
            Thread.SpinWait(20);
        }
    }

    /// <summary>A platform with a VT-d unit, a device on a DMA domain and a type1 container with a mapped buffer.</summary>
    private sealed class World
    {
        public World()
        {
            Platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
            PciBus pci = Platform.AddPciBus();
            var unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableMode48Bit);
            pci.AddDmaRemapper(unit, includeAll: true);
            pci.SetIommuOps(new IntelIommu(Platform, new IntelIommuOptions { ScalableMode = true }, unit)).ThrowIfError();
            Dev = pci.AddDevice(new PciDeviceSpec("0000:00:01.0") { Acs = true });
            PciDevice vfioDev = pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { Acs = true });
            Domain = Platform.Iommu.DomainAlloc(pci) ?? throw new InvalidOperationException("no domain");
            Platform.Iommu.AttachDevice(Domain, Dev).ThrowIfError();
            Platform.Iommu.Map(Domain, DmaIova, 0x1_0000_0000, 16 * Sizes.Page, IommuProt.Read | IommuProt.Write).ThrowIfError();

            var vfio = new VfioCore(Platform, new VfioType1Options { AllowUnsafeInterrupts = true });
            vfio.RegisterDevice(vfioDev).ThrowIfError();
            var proc = new ProcessAddressSpace(HostPageAllocator.ForPlatform(Platform, 4 * Sizes.GiB, 64 * Sizes.MiB), "vmm");
            Container = vfio.OpenContainer(proc, out _);
            vfio.OpenGroup(proc, vfioDev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
            g!.SetContainer(Container).ThrowIfError();
            Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
            Va = proc.Mmap(16 * Sizes.Page);
            proc.Write(Va, new byte[16 * Sizes.Page]).ThrowIfError();
        }

        public Platform Platform { get; }

        public PciDevice Dev { get; }

        public IDomain Domain { get; }

        public VfioContainer Container { get; }

        public ulong Va { get; }

        /// <summary>iommu_map / iommu_iova_to_phys / iommu_unmap of one of 64 pages: 0 / -EEXIST, a size, an address.</summary>
        public ulong CoreOp(int r)
        {
            IommuCore iommu = Platform.Iommu;
            ulong iova = MapIova + ((ulong)(r & 63) << 12);
            switch ((r >> 6) % 3)
            {
                case 0:
                    Errno e = iommu.Map(Domain, iova, 0x2_0000_0000 + (iova - MapIova), 4096, IommuProt.Read | IommuProt.Write);
                    return e is Errno.None or Errno.EEXIST ? 0UL : throw new InvalidOperationException($"map {e}");
                case 1:
                    return iommu.IovaToPhys(Domain, iova);
                default:
                    return iommu.Unmap(Domain, iova, 4096);
            }
        }

        /// <summary>A device read or write of 64 bytes at a mapped IOVA: always Ok.</summary>
        public object? DmaOp(int r)
        {
            Span<byte> buf = stackalloc byte[64];
            ulong iova = DmaIova + ((ulong)(r & 15) << 12) + 64;
            DmaResult d = (r & 16) == 0 ? Dev.DmaRead(null, iova, buf) : Dev.DmaWrite(null, iova, buf);
            return d.Status == DmaStatus.Ok ? null : throw new InvalidOperationException($"DMA {d.Status}");
        }

        /// <summary>MAP_DMA (0 or -EEXIST) or UNMAP_DMA (0) of one of 16 pages of the buffer.</summary>
        public object? VfioOp(int r)
        {
            ulong k = (ulong)(r & 15);
            if ((r & 16) == 0)
            {
                Errno e = Container.MapDma(new VfioIommuType1DmaMap(32, 3, Va + (k << 12), VfioIova + (k << 12), 4096));
                return e is Errno.None or Errno.EEXIST ? null : throw new InvalidOperationException($"MAP_DMA {e}");
            }

            var unmap = new VfioIommuType1DmaUnmap(VfioIommuType1DmaUnmap.StructSize, 0, VfioIova + (k << 12), 4096);
            Errno u = Container.UnmapDma(ref unmap);
            return u == Errno.None ? null : throw new InvalidOperationException($"UNMAP_DMA {u}");
        }
    }
}
