using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Memory;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// The unscoped fast paths (session 23): <c>iommu_iova_to_phys</c> and a DMA that hits the unit's
/// translation memo hold no access scope on owned memory, so neither <see cref="IommuCore.DomainFree"/>
/// nor <see cref="Platform.Dispose"/> waits for them; they validate afterwards instead. Racing either,
/// over many rounds with random timing and with the freed frames reused at once by another domain, every
/// answer is the true one (the mapping's address, the bytes written there) or an
/// <see cref="ObjectDisposedException"/>, never another domain's address, zeros or another exception,
/// and once a thread has seen the exception every later call throws it too.
/// </summary>
public sealed class UnscopedAccessRaceTests(ITestOutputHelper output)
{
    private const ulong K4 = 4096;
    private const int Pages = 64;
    private const ulong IovaBase = 0x4000_0000;
    private const ulong PaA = 0x1_0000_0000;
    private const ulong PaB = 0x2_0000_0000;

    // Pages 2 MiB apart: each has a leaf table of its own, so the domain has many frames for others to reuse.
    private static ulong Iova(int i) => IovaBase + ((ulong)i * 2 * Sizes.MiB) + ((ulong)(i & 7) * K4);

    private static (Platform Platform, PciBus Pci) NewPlatform()
    {
        var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        return (platform, pci);
    }

    // Until done (at most 5 s), then a random spin of up to maxSpin iterations: the free or dispose then lands
    // among the workers' calls even on a loaded machine, at a random point of a call.
    private static void WaitUntil(Func<bool> done, Random rng, int maxSpin)
    {
        var wait = System.Diagnostics.Stopwatch.StartNew();
        while (!done() && wait.ElapsedMilliseconds < 5000)
        {
            Thread.Yield();
        }

        Thread.SpinWait(rng.Next(0, maxSpin));
    }

    [Fact]
    public void Iova_to_phys_racing_domain_free_and_frame_reuse_answers_the_mapping_or_throws()
    {
        Assert.True(new PhysicalMemory(Sizes.MiB).RetiresOnDispose || !OperatingSystem.IsLinux(), "owned memory retires on dispose on Linux");
        (Platform platform, PciBus pci) = NewPlatform();
        using Platform _p = platform;
        int rounds = (int)Math.Clamp(ReliabilityBudget.Ops / 100, 300, 5000);
        ulong seed = ReliabilityBudget.Seed(0x10A);
        var rng = new Random((int)seed);
        var errors = new ConcurrentQueue<string>();
        int crossed = 0;
        long answers = 0;
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            IDomain a = platform.Iommu.DomainAlloc(pci)!;
            for (int i = 0; i < Pages; i++)
            {
                platform.Iommu.Map(a, Iova(i), PaA + ((ulong)i * K4), K4, IommuProt.Read | IommuProt.Write).ThrowIfError();
            }

            bool sawAnswer = false, sawFree = false;
            int r0 = round, roundAnswers = 0;
            var reader = new Thread(() =>
            {
                for (int n = 0; n < 2_000_000; n++)
                {
                    int i = n % Pages;
                    try
                    {
                        ulong pa = platform.Iommu.IovaToPhys(a, Iova(i) + 0x18);
                        if (sawFree)
                        {
                            errors.Enqueue($"round {r0}: iova_to_phys answered 0x{pa:x} after one threw ObjectDisposedException");
                            return;
                        }

                        if (pa != PaA + ((ulong)i * K4) + 0x18)
                        {
                            errors.Enqueue($"round {r0}: iova_to_phys of page {i} answered 0x{pa:x}, not 0x{PaA + ((ulong)i * K4) + 0x18:x}");
                            return;
                        }

                        sawAnswer = true;
                        Interlocked.Increment(ref answers);
                        Volatile.Write(ref roundAnswers, roundAnswers + 1);
                    }
                    catch (ObjectDisposedException)
                    {
                        sawFree = true;
                        if (n > 2 * Pages)
                        {
                            return;
                        }
                    }
                    catch (Exception ex)
                    {
                        errors.Enqueue($"round {r0}: {ex.GetType().Name}: {ex.Message}");
                        return;
                    }
                }
            }) { IsBackground = true };
            reader.Start();

            // Free once the reader is answering (a random number of answers in), so that the free lands
            // among its calls on a loaded machine too; the spin moves it within a walk.
            int wanted = rng.Next(1, 200);
            WaitUntil(() => Volatile.Read(ref roundAnswers) >= wanted || !reader.IsAlive, rng, 200);
            platform.Iommu.DomainFree(a);

            // Another domain takes the frames at once and fills them with entries of its own: a walk that
            // read one of them without validation would answer PaB's addresses (or follow them elsewhere).
            IDomain b = platform.Iommu.DomainAlloc(pci)!;
            for (int i = 0; i < Pages; i++)
            {
                platform.Iommu.Map(b, Iova(Pages - 1 - i) + (K4 * 8), PaB + ((ulong)i * K4), K4, IommuProt.Read).ThrowIfError();
            }

            Assert.True(reader.Join(TimeSpan.FromSeconds(30)), "reader hung");
            platform.Iommu.DomainFree(b);
            if (sawAnswer && sawFree)
            {
                crossed++;
            }
        }

        output.WriteLine($"{rounds} rounds, {answers} answers, the free landed among running calls in {crossed}");
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        Assert.True(crossed >= rounds / 10, $"the free landed among running calls in only {crossed} of {rounds} rounds: the race was not exercised");
    }

    [Fact]
    public void Dma_and_iova_to_phys_racing_platform_dispose_return_the_true_bytes_or_throw()
    {
        int rounds = (int)Math.Clamp(ReliabilityBudget.Ops / 1000, 60, 1000);
        ulong seed = ReliabilityBudget.Seed(0x10B);
        var rng = new Random((int)seed);
        var errors = new ConcurrentQueue<string>();
        int crossed = 0;
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            (Platform platform, PciBus pci) = NewPlatform();
            PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:01.0") { Acs = true });
            IDomain domain = platform.Iommu.GetDomainForDev(dev)!;
            var unit = (VtdUnit)pci.FindDmaRemapper(dev)!;
            for (int i = 0; i < 16; i++)
            {
                platform.Iommu.Map(domain, Iova(i), PaA + ((ulong)i * K4), K4, IommuProt.Read | IommuProt.Write).ThrowIfError();
                platform.Memory.Fill(PaA + ((ulong)i * K4), K4, (byte)(0x40 + i));
            }

            // Warm the unit's memo so that the reads take the unscoped path.
            var warm = new byte[64];
            for (int i = 0; i < 16; i++)
            {
                Assert.Equal(DmaStatus.Ok, dev.DmaRead(null, Iova(i), warm).Status);
            }

            using var start = new Barrier(5);
            long okCalls = 0;
            var sawOk = new bool[4];
            var sawOde = new bool[4];
            int r0 = round;

            void Run(int id, Func<int, string?> op)
            {
                start.SignalAndWait();
                for (int n = 0; n < 400_000; n++)
                {
                    try
                    {
                        string? wrong = op(n & 15);
                        if (wrong is not null || sawOde[id])
                        {
                            errors.Enqueue($"round {r0} worker {id}: {wrong ?? "a call succeeded after one threw ObjectDisposedException"}");
                            return;
                        }

                        sawOk[id] = true;
                        Interlocked.Increment(ref okCalls);
                    }
                    catch (ObjectDisposedException)
                    {
                        sawOde[id] = true;
                        if (n > 64)
                        {
                            return;
                        }
                    }
                    catch (Exception ex)
                    {
                        errors.Enqueue($"round {r0} worker {id}: {ex.GetType().Name}: {ex.Message}");
                        return;
                    }
                }
            }

            string? DeviceRead(int i)
            {
                Span<byte> b = stackalloc byte[64];
                DmaResult r = dev.DmaRead(null, Iova(i) + 64, b);
                return r.Status != DmaStatus.Ok ? $"DmaRead {r}" : b.IndexOfAnyExcept((byte)(0x40 + i)) >= 0 ? $"DmaRead of page {i} moved bytes it does not hold ({b[b.IndexOfAnyExcept((byte)(0x40 + i))]:x2})" : null;
            }

            string? UnitRead(int i)
            {
                Span<byte> b = stackalloc byte[32];
                DmaResult r = unit.Read(dev.DmaRequesterId, null, Iova(i) + 512, b);
                return r.Status != DmaStatus.Ok ? $"VtdUnit.Read {r}" : b.IndexOfAnyExcept((byte)(0x40 + i)) >= 0 ? $"VtdUnit.Read of page {i} moved bytes it does not hold" : null;
            }

            // Writes the bytes the page already holds (so the readers' expectations stay true): 48 B take the
            // inline copy, 8 B the out-of-line one.
            string? DeviceWrite(int i)
            {
                Span<byte> b = stackalloc byte[(i & 1) == 0 ? 48 : 8];
                b.Fill((byte)(0x40 + i));
                DmaResult r = dev.DmaWrite(null, Iova(i) + 1024, b);
                return r.Status != DmaStatus.Ok ? $"DmaWrite {r}" : null;
            }

            string? Translate(int i)
            {
                ulong pa = platform.Iommu.IovaToPhys(domain, Iova(i) + 8);
                return pa == PaA + ((ulong)i * K4) + 8 ? null : $"iova_to_phys of page {i} answered 0x{pa:x}";
            }

            Thread[] workers = [new(() => Run(0, DeviceRead)), new(() => Run(1, UnitRead)), new(() => Run(2, Translate)), new(() => Run(3, DeviceWrite))];
            foreach (Thread t in workers)
            {
                t.Start();
            }

            // Dispose once the workers are answering (a random number of calls in), so that it lands among
            // their calls on a loaded machine too.
            start.SignalAndWait();
            int wanted = rng.Next(1, 3000);
            WaitUntil(() => Interlocked.Read(ref okCalls) >= wanted || !errors.IsEmpty, rng, 2000);
            platform.Dispose();
            foreach (Thread t in workers)
            {
                Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a worker hung");
            }

            if (sawOk.Any(b => b) && sawOde.Any(b => b))
            {
                crossed++;
            }

            // After Dispose every path throws, the unscoped ones included.
            Assert.Throws<ObjectDisposedException>(() => dev.DmaRead(null, Iova(0), new byte[8]));
            Assert.Throws<ObjectDisposedException>(() => dev.DmaWrite(null, Iova(0), new byte[48]));
            Assert.Throws<ObjectDisposedException>(() => unit.Read(dev.DmaRequesterId, null, Iova(0), new byte[8]));
            Assert.Throws<ObjectDisposedException>(() => platform.Iommu.IovaToPhys(domain, Iova(0)));
        }

        output.WriteLine($"{rounds} rounds, Dispose landed among running calls in {crossed}");
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        Assert.True(crossed >= Math.Max(5, rounds / 10), $"Dispose landed among running calls in only {crossed} of {rounds} rounds: the race was not exercised");
    }

    [Fact]
    public void Dispose_gives_owned_memory_back_but_leaves_it_mapped_for_a_late_reader()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.False(new PhysicalMemory(Sizes.MiB).RetiresOnDispose);
            return;
        }

        var memory = new PhysicalMemory(64 * Sizes.MiB);
        Assert.True(memory.RetiresOnDispose);
        memory.WriteUInt64(0x20_1000, 0xDEAD_BEEF_0BAD_F00D);
        Span<byte> late = memory.GetSpan(0x20_1000, 8);
        Assert.Equal(0xDEAD_BEEF_0BAD_F00DUL, BitConverter.ToUInt64(late));
        memory.Dispose();

        // A reader that took the address before Dispose (what an unscoped fast path may hold) reads the
        // zeros of a page given back, and writes to a fresh one, instead of faulting.
        Assert.Equal(0UL, BitConverter.ToUInt64(late));
        late.Fill(1);
        Assert.Throws<ObjectDisposedException>(() => memory.ReadUInt64(0x20_1000));
        GC.KeepAlive(memory);
    }

    [Fact]
    public void Caller_owned_memory_does_not_retire_and_keeps_the_scoped_paths()
    {
        nint raw = System.Runtime.InteropServices.Marshal.AllocHGlobal((nint)(4 * Sizes.MiB) + 4096);
        try
        {
            nint host = (raw + 4095) & ~(nint)4095;
            using var memory = new PhysicalMemory(16 * Sizes.MiB, [new HostMemoryRange(0, 4 * Sizes.MiB, host)]);
            Assert.False(memory.RetiresOnDispose);
        }
        finally
        {
            System.Runtime.InteropServices.Marshal.FreeHGlobal(raw);
        }
    }
}
