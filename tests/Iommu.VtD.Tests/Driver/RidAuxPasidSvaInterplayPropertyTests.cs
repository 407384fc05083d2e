using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// One aux-, PASID- and SVA-capable device on one scalable-mode unit (second- and first-level UNMANAGED domains,
/// default DMA or identity domain):
/// its RID domain (UNMANAGED attach, detach back to the default DMA domain), AUX enable/disable, aux attach/detach,
/// PASID attach/detach (6.x <c>set_dev_pasid</c>), SVA bind/unbind, maps and DMA in any order, against a model.
/// </summary>
/// <remarks>
/// <para>The model is 5.15 where 5.15 is safe. A RID-domain change goes through <c>dmar_remove_one_dev_info</c>:
/// it frees the device's info (so <c>auxd_enabled</c> is 0 afterwards), tears down RID2PASID and frees the PASID
/// table (<c>intel_pasid_free_table</c>), and the new context entry has PASIDE clear. 5.15 leaves the aux domains'
/// and SVA binds' entries in the freed table; the model tears them down first (<c>TearDownAuxPasidEntries</c>),
/// so those PASIDs fault from then on; their bookkeeping stays (a later aux attach of the same domain only counts
/// a user, a later bind of the same mm only counts a user, as in 5.15). PASIDs attached with
/// <c>iommu_attach_device_pasid</c> (a 6.x feature) are re-programmed in the new table, PASIDE included.</para>
/// <para>Errnos: RID attach -EBUSY while a non-default domain or any attached PASID is on the group (the latter a
/// 6.x rule), -EPERM while AUX is enabled (5.15 <c>intel_iommu_attach_device</c>); AUX disable always 0 (5.15 has
/// no -EBUSY); aux attach -EPERM without AUX, else 0; aux detach without AUX a no-op (5.15); PASID attach -EBUSY
/// when the slot is held, a live aux entry or any bind (its entry lost or not) holds the PASID, else 0; SVA bind 0.</para>
/// <para>After every step every PASID in play, and no PASID, is DMA'd at one IOVA (and at each bound process's
/// pages): the access lands exactly where the current owner maps it, or faults. At the end, with everything
/// detached and the domains freed, frames, DIDs and PASIDs are back where they started.</para>
/// </remarks>
public sealed class RidAuxPasidSvaInterplayPropertyTests
{
    private const ulong Iova = 0x4000_0000, PaBase = 0x1_8000_0000; // above the host page pool (4-5 GiB) the processes' pages come from
    private const int Doms = 3, Iovas = 3, Mms = 2;

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Property_rid_aux_pasid_and_sva_attachments_in_any_order_keep_dma_exact_and_leak_nothing(bool firstLevel, bool identity)
    {
        // 16-19 repeat AUX enable and the RID detach, so a lost aux entry is detached often enough for coverage to see it.
        Coverage.Clear();
        Gen.Select(Gen.Int[0, 19].Select(o => o switch { 16 or 17 => 2, 18 or 19 => 1, _ => o }), Gen.Int[0, Doms - 1], Gen.Int[1, 5], Gen.Int[0, Iovas - 1]).Array[1, 40]
            // Half the runs start on an UNMANAGED RID domain with AUX on and an aux domain attached, so the later RID
            // detach loses a live aux entry often enough for the lost-entry orders to be reached every run.
            .Select(Gen.Bool, Gen.Bool, (s, c, pre) => (s: pre ? [(0, 0, 1, 0), (2, 0, 1, 0), (4, 1, 1, 0), .. s] : s, c))
            .Sample(t => Run(firstLevel, identity, t.s, t.c), iter: 1000, threads: 1);

        // The orders this audit is about were reached.
        foreach (string c in (string[])["rid change with aux live", "rid change with sva live", "rid change with pasid attached",
            "aux detach of a lost entry", "pasid attach at a lost aux pasid", "sva unbind of a lost entry", "aux user added to a lost entry",
            "domain free with aux left", "process exit while bound"])
        {
            Assert.True(Coverage.GetValueOrDefault(c) > 0, $"never reached: {c}; reached: {string.Join(", ", Coverage.Select(kv => $"{kv.Key} {kv.Value}"))}");
        }
    }

    // Per theory row (rows of one method run one after another): each row must reach every order on its own.
    private static readonly Dictionary<string, int> Coverage = [];

    private static void Cover(string what) => Coverage[what] = Coverage.GetValueOrDefault(what) + 1;

    internal static void Run(bool firstLevel, bool identity, (int Op, int Dom, int P, int Iova)[] steps, bool cleanAux)
    {
        using var f = new DriverBed(
            IopfTestKit.Config,
            new IntelIommuOptions { FirstLevel = firstLevel ? FirstLevelPolicy.AllWhenEveryUnitHasFlts : FirstLevelPolicy.FirstLevelByDefault },
            memory: SmallMemory,
            defaultDomain: identity ? DomainType.Identity : DomainType.Dma);
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true, ScalableIov = true });
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        HostPageAllocator pages = HostPageAllocator.ForPlatform(f.Platform);
        var mms = new ProcessAddressSpace[Mms];
        var mmVa = new ulong[Mms];
        for (int m = 0; m < Mms; m++)
        {
            mms[m] = new ProcessAddressSpace(pages, $"p{m}");
            mmVa[m] = mms[m].Mmap(K4 * (ulong)(m + 1)) + (K4 * (ulong)m); // distinct VAs: the processes lay out alike
            Assert.Equal(Errno.None, mms[m].Write(mmVa[m], new byte[8]));
        }

        IntelIommuUnit unit = f.Driver.Units[0];
        long framesBefore = f.Platform.Frames.LiveFrames;
        int didsBefore = unit.DomainIdsInUse;

        IDomain[] doms = [.. Enumerable.Range(0, Doms).Select(_ => f.Unmanaged())];
        Assert.All(doms, d => Assert.Equal(firstLevel, ((DmarDomain)d).UseFirstLevel));
        var mapped = new bool[Doms, Iovas];
        ulong Page(int d, int i) => PaBase + ((ulong)d * M2) + ((ulong)i * K4);
        ulong IovaOf(int i) => Iova + ((ulong)i * K4);

        int? rid = null; // null: the default domain (DMA: never mapped here; identity: 1:1)
        bool auxEnabled = false, paside = true; // SVA enable set PASIDE
        var aux = new Dictionary<int, (int Users, bool Live, uint Pasid)>();
        var slots = new Dictionary<uint, int>();
        var sva = new (int Users, bool Live, uint Pasid, IommuSva? Handle)[Mms];
        var log = new List<string>();
        var exited = new bool[Mms];

        void RidChange()
        {
            if (aux.Values.Any(a => a.Live))
            {
                Cover("rid change with aux live");
            }

            if (sva.Any(x => x.Users > 0 && x.Live))
            {
                Cover("rid change with sva live");
            }

            if (slots.Count > 0)
            {
                Cover("rid change with pasid attached");
            }

            auxEnabled = false;
            paside = slots.Count > 0; // RestoreDevPasids enables PASID again
            foreach (int d in aux.Keys.ToArray())
            {
                aux[d] = aux[d] with { Live = false };
            }

            for (int m = 0; m < Mms; m++)
            {
                sva[m].Live = false;
            }
        }

        IEnumerable<uint> PasidsInPlay() =>
            slots.Keys.Concat(aux.Values.Select(a => a.Pasid)).Concat(sva.Where(s => s.Users > 0).Select(s => s.Pasid)).Append(1u).Append(5u).Distinct();

        void Check(int i, string why)
        {
            string ctx = $"{why}; log: {string.Join(" | ", log)}";
            f.AssertDma(dev, null, IovaOf(i) + 8, rid is int r ? (mapped[r, i] ? Page(r, i) + 8 : 0) : identity ? IovaOf(i) + 8 : 0, $"RID DMA; {ctx}");
            foreach (uint p in PasidsInPlay())
            {
                int? owner = slots.TryGetValue(p, out int s) ? s : aux.Where(a => a.Value.Live && a.Value.Pasid == p).Select(a => (int?)a.Key).FirstOrDefault();
                int svaOwner = owner is null ? Array.FindIndex(sva, x => x.Users > 0 && x.Live && x.Pasid == p) : -1;
                ulong expected = paside && owner is int o && mapped[o, i] ? Page(o, i) + 8 : 0;
                f.AssertDma(dev, p, IovaOf(i) + 8, expected, $"PASID {p} owner {owner?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} sva {svaOwner}; {ctx}");
                for (int m = 0; m < Mms; m++)
                {
                    if (sva[m].Users == 0 && svaOwner != m)
                    {
                        continue;
                    }

                    ulong pa = paside && svaOwner == m ? IopfTestKit.Pa(mms[m], mmVa[m] + 16) : 0;
                    f.AssertDma(dev, p, mmVa[m] + 16, pa, $"PASID {p} at process {m}'s page; {ctx}");
                }
            }
        }

        foreach ((int op, int dom, int px, int iova) in steps)
        {
            IDomain d = doms[dom];
            switch (op)
            {
                case 0:
                {
                    Errno expected = rid is not null || slots.Count > 0 ? Errno.EBUSY : auxEnabled ? Errno.EPERM : Errno.None;
                    Errno got = f.Iommu.AttachDevice(d, dev);
                    log.Add($"rid-attach {dom}={got}");
                    Assert.True(expected == got, $"RID attach of {dom}: expected {expected} got {got}; log: {string.Join(" | ", log)}");
                    if (got == Errno.None)
                    {
                        rid = dom;
                        RidChange();
                    }

                    break;
                }

                case 1:
                    f.Iommu.DetachDevice(d, dev); // 5.15 __iommu_detach_group re-attaches the default domain whatever `domain` is
                    log.Add($"rid-detach {dom}");
                    if (rid is not null)
                    {
                        rid = null;
                        RidChange();
                    }

                    break;
                case 2:
                    Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Aux));
                    log.Add("aux-enable");
                    auxEnabled = paside = true;
                    break;
                case 3:
                    Assert.Equal(Errno.None, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Aux)); // 5.15: no -EBUSY
                    log.Add("aux-disable");
                    auxEnabled = false;
                    break;
                case 4:
                case 5:
                {
                    Errno got = f.Iommu.AuxAttachDevice(d, dev);
                    log.Add($"aux-attach {dom}={got}");
                    Assert.True((auxEnabled ? Errno.None : Errno.EPERM) == got, $"aux attach of {dom}: got {got}; log: {string.Join(" | ", log)}");
                    if (got != Errno.None)
                    {
                        break;
                    }

                    uint pasid = (uint)f.Iommu.AuxGetPasid(d, dev);
                    if (aux.TryGetValue(dom, out var a))
                    {
                        Assert.Equal(a.Pasid, pasid);
                        aux[dom] = a with { Users = a.Users + 1 }; // users++ only: a lost entry stays lost (5.15)
                        if (!a.Live)
                        {
                            Cover("aux user added to a lost entry");
                        }
                    }
                    else
                    {
                        Assert.DoesNotContain(pasid, slots.Keys);
                        Assert.DoesNotContain(pasid, aux.Values.Select(x => x.Pasid));
                        Assert.DoesNotContain(pasid, sva.Where(s => s.Users > 0).Select(s => s.Pasid));
                        aux[dom] = (1, true, pasid);
                    }

                    break;
                }

                case 6:
                    f.Iommu.AuxDetachDevice(d, dev);
                    log.Add($"aux-detach {dom}");
                    if (auxEnabled && aux.TryGetValue(dom, out var ad))
                    {
                        if (!ad.Live)
                        {
                            Cover("aux detach of a lost entry");
                        }

                        if (ad.Users == 1)
                        {
                            aux.Remove(dom);
                            Assert.Equal(Errno.EINVAL.ToKernelReturn(), f.Iommu.AuxGetPasid(d, dev)); // reset (5.15 keeps the stale number)
                        }
                        else
                        {
                            aux[dom] = ad with { Users = ad.Users - 1 };
                        }
                    }

                    break;
                case 7:
                case 8:
                {
                    // Small raw PASIDs, or one an aux domain or a bind uses (live or lost).
                    uint p = px <= 4 ? (uint)px
                        : aux.Count > 0 ? aux.Values.ElementAt(dom % aux.Count).Pasid
                        : sva[dom % Mms].Users > 0 ? sva[dom % Mms].Pasid : 6u;
                    bool live = aux.Values.Any(a => a.Live && a.Pasid == p) || sva.Any(s => s.Users > 0 && s.Pasid == p); // a bind holds its PASID even once its entry went (6.2's pasid_array)
                    Errno expected = slots.ContainsKey(p) || live ? Errno.EBUSY : Errno.None;
                    Errno got = f.Iommu.AttachDevicePasid(d, dev, p);
                    log.Add($"pasid-attach {dom}@{p}={got}");
                    Assert.True(expected == got, $"PASID attach of {dom} at {p}: expected {expected} got {got}; log: {string.Join(" | ", log)}");
                    if (got == Errno.None && aux.Values.Any(a => !a.Live && a.Pasid == p))
                    {
                        Cover("pasid attach at a lost aux pasid");
                    }

                    if (got == Errno.None)
                    {
                        slots[p] = dom;
                        paside = true;
                    }

                    break;
                }

                case 9:
                {
                    uint p = slots.Count == 0 ? 1u : slots.Keys.ElementAt(px % slots.Count);
                    if (slots.Remove(p, out int held))
                    {
                        f.Iommu.DetachDevicePasid(doms[held], dev, p);
                        log.Add($"pasid-detach {held}@{p}");
                    }

                    break;
                }

                case 10:
                {
                    int m = dom % Mms;
                    Errno got = f.Iommu.SvaBindDevice(dev, mms[m], null, out IommuSva? h);
                    log.Add($"sva-bind {m}={got}");
                    Assert.True(got == (exited[m] ? Errno.EINVAL : Errno.None), $"SVA bind of {m}: got {got}; log: {string.Join(" | ", log)}");
                    if (got != Errno.None)
                    {
                        break;
                    }

                    uint pasid = f.Iommu.SvaGetPasid(h!);
                    if (sva[m].Users > 0)
                    {
                        Assert.Same(sva[m].Handle, h);
                        Assert.Equal(sva[m].Pasid, pasid);
                        sva[m].Users++;
                    }
                    else
                    {
                        Assert.DoesNotContain(pasid, slots.Keys);
                        Assert.DoesNotContain(pasid, aux.Values.Select(x => x.Pasid));
                        sva[m] = (1, true, pasid, h);
                    }

                    break;
                }

                case 11:
                {
                    int m = dom % Mms;
                    if (sva[m].Users > 0)
                    {
                        f.Iommu.SvaUnbindDevice(sva[m].Handle!);
                        log.Add($"sva-unbind {m}");
                        if (!sva[m].Live && sva[m].Users == 1)
                        {
                            Cover("sva unbind of a lost entry");
                        }

                        if (--sva[m].Users == 0)
                        {
                            sva[m] = default;
                        }
                    }

                    break;
                }

                case 14:
                    // Free a domain that is neither the RID domain nor attached to a PASID (freeing those is the caller's
                    // bug); its aux attachments, live or lost, go with it (AuxRemoveAllOnFree), then a fresh one takes its place.
                    if (rid != dom && !slots.ContainsValue(dom))
                    {
                        uint old = aux.TryGetValue(dom, out var fa) ? fa.Pasid : 0;
                        if (old != 0)
                        {
                            Cover("domain free with aux left");
                        }

                        f.Iommu.DomainFree(d);
                        log.Add($"free {dom}");
                        aux.Remove(dom);
                        doms[dom] = f.Unmanaged();
                        for (int i = 0; i < Iovas; i++)
                        {
                            mapped[dom, i] = false;
                        }

                        if (old != 0 && !slots.ContainsKey(old))
                        {
                            f.AssertDma(dev, old, IovaOf(iova) + 8, 0, $"the freed domain's aux PASID {old}; log: {string.Join(" | ", log)}");
                        }
                    }

                    break;
                case 15:
                {
                    int m = dom % Mms;
                    if (!exited[m])
                    {
                        mms[m].Exit(); // intel_mm_release clears the bind's entry; the bind stays until the unbind
                        exited[m] = true;
                        sva[m].Live = false;
                        log.Add($"exit {m}");
                        if (sva[m].Users > 0)
                        {
                            Cover("process exit while bound");
                        }
                    }

                    break;
                }

                default:
                    if (mapped[dom, iova])
                    {
                        Assert.Equal(K4, f.Iommu.Unmap(d, IovaOf(iova), K4));
                    }
                    else
                    {
                        Assert.Equal(Errno.None, f.Iommu.Map(d, IovaOf(iova), Page(dom, iova), K4, RW));
                    }

                    mapped[dom, iova] = !mapped[dom, iova];
                    log.Add($"{(mapped[dom, iova] ? "map" : "unmap")} {dom}/{iova}");
                    break;
            }

            Check(iova, $"after step {log.Count}");
        }

        // Tear everything down: PASIDs, binds, (optionally) aux attachments, RID domain; then free the domains,
        // which drops aux attachments left behind (never detached, or AUX disabled so the detach was a no-op).
        var pasidsUsed = PasidsInPlay().ToArray();
        foreach ((uint p, int held) in slots)
        {
            f.Iommu.DetachDevicePasid(doms[held], dev, p);
        }

        slots.Clear();
        for (int m = 0; m < Mms; m++)
        {
            for (; sva[m].Users > 0; sva[m].Users--)
            {
                f.Iommu.SvaUnbindDevice(sva[m].Handle!);
            }
        }

        if (cleanAux)
        {
            Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Aux));
            foreach ((int dm, var a) in aux)
            {
                for (int u = 0; u < a.Users; u++)
                {
                    f.Iommu.AuxDetachDevice(doms[dm], dev);
                }
            }

            Assert.Equal(0, f.Driver.PasidsInUse);
        }

        if (aux.Count > 0 && !cleanAux)
        {
            Cover("domain free with aux left");
        }

        if (rid is int rr)
        {
            f.Iommu.DetachDevice(doms[rr], dev);
        }

        foreach (IDomain d in doms)
        {
            f.Iommu.DomainFree(d);
        }

        foreach (uint p in pasidsUsed)
        {
            f.AssertDma(dev, p, IovaOf(0) + 8, 0, $"PASID {p} after everything was freed; log: {string.Join(" | ", log)}");
            for (int m = 0; m < Mms; m++)
            {
                f.AssertDma(dev, p, mmVa[m] + 16, 0, $"PASID {p} at process {m} after everything was freed");
            }
        }

        string all = string.Join(" | ", log);
        Assert.True(f.Driver.PasidsInUse == 0, $"aux PASIDs left: {f.Driver.PasidsInUse}; log: {all}");
        Assert.True(didsBefore == unit.DomainIdsInUse, $"DIDs before {didsBefore} after {unit.DomainIdsInUse}; log: {all}");
        Assert.True(framesBefore == f.Platform.Frames.LiveFrames, $"frames before {framesBefore} after {f.Platform.Frames.LiveFrames}; log: {all}");
        uint next = f.Iommu.AllocGlobalPasid(dev);
        Assert.True(next == 1, $"the PASID namespace is not empty: next PASID {next}; log: {all}");
        f.Iommu.FreeGlobalPasid(next);
        foreach (ProcessAddressSpace mm in mms)
        {
            mm.Dispose();
        }
    }
}
