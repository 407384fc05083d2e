using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// Devices join and leave one domain (RID attach and detach, some with ATS, some without, and in
/// scalable mode an ATS device's auxiliary attach through a PASID) while other
/// threads map and unmap their own pages of that domain. Each unmap's flush walks the devices that
/// reach the domain; before the fix that walk took no lock and an attach on another thread broke it
/// (the list changed under its enumerator, or the flush saw a half-grown list). Every call succeeds;
/// a page whose unmap returned is never read again, through the IOTLB or through any ATS device's
/// cached translation (each mapper warms the joining ATS devices' device-TLBs before it unmaps).
/// </summary>
public sealed class AttachDuringUnmapConcurrencyTests(ITestOutputHelper output)
{
    private const ulong IovaBase = 0x10_0000_0000;
    private const ulong PaBase = 0x2_0000_0000;
    private const int PagesPerMapper = 32;
    private const int MinimumJoins = 10;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Devices_joining_and_leaving_race_unmaps_without_a_crash_or_a_stale_translation(bool scalable)
    {
        int mappers = Math.Max(Environment.ProcessorCount - 1, 2);
        long opsPerMapper = Math.Max(ReliabilityBudget.Ops / 10 / mappers, 200);
        ulong seed = ReliabilityBudget.Seed(0xA77);
        VtdConfig config = scalable ? VtdConfig.ScalableMode48Bit with { DeviceTlb = true } : VtdConfig.Legacy48Bit; // device-TLBs need scalable mode here
        using var bed = new FailNthVtdBed(config, scalable);
        PciDevice resident = bed.AddDevice("0000:00:03.0");
        PciDevice[] joiners =
        [
            bed.Pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true, Ats = true }),
            bed.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { Acs = true }),
            bed.Pci.AddDevice(new PciDeviceSpec("0000:00:06.0") { Acs = true, Ats = true }),
        ];
        PciDevice? auxParent = null;
        if (scalable)
        {
            auxParent = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { Acs = true, Ats = true, PasidWidth = 20, ScalableIov = true });
            Assert.Equal(Errno.None, bed.Iommu.SetDevAttr(auxParent, IommuDevAttr.AuxdEnable));
            joiners = [.. joiners, auxParent];
        }

        DmarDomain dom = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(dom, resident));

        // The PASID an ATS read of the aux parent carries (the domain's default PASID while attached).
        uint? PasidOf(PciDevice j) => j == auxParent ? dom.DefaultPasid : null;

        var attached = new int[joiners.Length]; // 1 while the joiner thread has the device in the domain
        var warmed = new long[joiners.Length];  // ATS reads that cached a translation before an unmap
        var errors = new ConcurrentQueue<string>();
        int done = 0;
        long joins = 0, atsChecks = 0;

        void Mapper(int m)
        {
            var rng = new Random((int)(seed + (ulong)m));
            var b = new byte[8];
            try
            {
                // Past the budget, go on (up to 20 times it) until the joiner has raced enough: on a loaded
                // machine it may not have run at all yet.
                for (long i = 0; (i < opsPerMapper || (Interlocked.Read(ref joins) <= MinimumJoins && i < 20 * opsPerMapper)) && errors.IsEmpty; i++)
                {
                    int page = (m * PagesPerMapper) + rng.Next(PagesPerMapper);
                    ulong iova = IovaBase + ((ulong)page * Sizes.Page);
                    ulong pa = PaBase + ((ulong)page * Sizes.Page);
                    ulong marker = ((ulong)page << 32) | (uint)i;
                    bed.Platform.Memory.WriteUInt64(pa, marker);
                    Errno e = bed.Iommu.Map(dom, iova, pa, Sizes.Page, IommuProt.Read | IommuProt.Write);
                    if (e != Errno.None)
                    {
                        errors.Enqueue($"mapper {m}: map of 0x{iova:x}: {e}");
                        return;
                    }

                    if (!resident.DmaRead(null, iova, b).IsOk || BitConverter.ToUInt64(b) != marker)
                    {
                        errors.Enqueue($"mapper {m}: the resident device did not read page 0x{iova:x} after its map");
                    }

                    // Warm the device-TLB of every ATS device that is in the domain now.
                    for (int k = 0; k < joiners.Length; k++)
                    {
                        if (joiners[k].AtsEnabled && joiners[k].AtsDmaRead(PasidOf(joiners[k]), iova, b).IsOk)
                        {
                            Interlocked.Increment(ref warmed[k]);
                        }
                    }

                    ulong n = bed.Iommu.Unmap(dom, iova, Sizes.Page);
                    if (n != Sizes.Page)
                    {
                        errors.Enqueue($"mapper {m}: unmap of 0x{iova:x} returned {n}");
                    }

                    bed.Platform.Memory.WriteUInt64(pa, ~marker);
                    if (resident.DmaRead(null, iova, b).IsOk)
                    {
                        errors.Enqueue($"mapper {m}: the resident device read page 0x{iova:x} after its unmap returned");
                    }

                    foreach (PciDevice j in joiners)
                    {
                        Interlocked.Increment(ref atsChecks);
                        if (j.AtsDmaRead(PasidOf(j), iova, b).IsOk)
                        {
                            errors.Enqueue($"mapper {m}: {j.Name} read page 0x{iova:x} (0x{BitConverter.ToUInt64(b):x}) after its unmap returned");
                        }
                    }
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"mapper {m}: {ex}");
            }
            finally
            {
                Interlocked.Increment(ref done);
            }
        }

        void Joiner()
        {
            var rng = new Random((int)seed);
            try
            {
                while (Volatile.Read(ref done) < mappers && errors.IsEmpty)
                {
                    int k = rng.Next(joiners.Length);
                    bool aux = joiners[k] == auxParent;
                    if (attached[k] == 0)
                    {
                        Errno e = aux ? bed.Iommu.AttachDeviceAux(dom, joiners[k]) : bed.Iommu.AttachDevice(dom, joiners[k]);
                        if (e != Errno.None)
                        {
                            errors.Enqueue($"joiner: attach of {joiners[k].Name}: {e}");
                            return;
                        }

                        attached[k] = 1;
                        Interlocked.Increment(ref joins);
                    }
                    else
                    {
                        if (aux)
                        {
                            bed.Iommu.DetachDeviceAux(dom, joiners[k]);
                        }
                        else
                        {
                            bed.Iommu.DetachDevice(dom, joiners[k]);
                        }

                        attached[k] = 0;
                    }
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"joiner: {ex}");
            }
        }

        var threads = Enumerable.Range(0, mappers).Select(m => new Thread(() => Mapper(m)) { IsBackground = true }).ToList();
        threads.Add(new Thread(Joiner) { IsBackground = true });
        threads.ForEach(t => t.Start());
        threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(120)), "a thread did not finish"));
        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
        output.WriteLine($"{mappers} mappers × {opsPerMapper} map/unmap rounds, {joins} joins, {atsChecks} reads through joining devices after an unmap, ATS reads before one: {string.Join(", ", warmed)}");
        Assert.True(joins > MinimumJoins, $"only {joins} joins raced the unmaps");

        // Each ATS device did cache the domain's translations while the unmaps ran (else the stale-read check above is empty).
        for (int k = 0; k < joiners.Length; k++)
        {
            Assert.True(!scalable || joiners[k] == joiners[1] || warmed[k] > 0, $"{joiners[k].Name} never read through its device-TLB");
        }
    }
}
