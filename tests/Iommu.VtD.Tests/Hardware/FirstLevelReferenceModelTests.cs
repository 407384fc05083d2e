using Iommu.Devices;
using CsCheck;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The first-level walk against a reference model written here: random IA-32e tables (present, R/W,
/// U/S, PS, XD, A, D drawn per entry over a small address space) and random requests (user or
/// supervisor; read, write or execute) under random SRE/WPE/NXE/SMEP/ERE/EAFE. After every request the
/// unit's outcome (fault reason or physical address) equals the model's, and every table entry in
/// memory holds exactly the accessed/dirty bits the model says it should.
/// </summary>
public class FirstLevelReferenceModelTests
{
    private const uint Pasid = 0x33;
    private static readonly VtdConfig Config = VtdConfig.ScalableModeFirstLevel48Bit with { ExecuteRequests = true };

    [Fact]
    public void Unit_agrees_with_the_reference_walker_on_results_and_accessed_dirty_bits() =>
        Gen.Select(Gen.Int, Gen.Int[0, 63])
            .Sample((seed, flags) => Run(seed, flags), iter: 120, print: t => t.ToString());

    private static void Run(int seed, int flagBits)
    {
        var rnd = new Random(seed);
        ulong q2 = ((flagBits & 1) != 0 ? Sre : 0) | ((flagBits & 2) != 0 ? Wpe : 0) | ((flagBits & 4) != 0 ? Nxe : 0)
            | ((flagBits & 8) != 0 ? Smep : 0) | ((flagBits & 16) != 0 ? Ere : 0) | ((flagBits & 32) != 0 ? Eafe : 0);
        using var rig = new FirstStageRig(Config);
        var entries = new List<ulong>();
        int leafCounter = 0;
        ulong root = rig.FlRoot;
        Fill(rig, rnd, root, 4, entries, ref leafCounter);
        rig.Entry(Pasid, 3, q2);
        rig.Enable();

        var model = new Reference(rig.B.Memory.ReadUInt64, root, q2);
        var expected = entries.ToDictionary(a => a, rig.Read);
        for (int n = 0; n < 40; n++)
        {
            ulong iova = ((ulong)rnd.Next(2) << 39) | ((ulong)rnd.Next(2) << 30) | ((ulong)rnd.Next(2) << 21) | ((ulong)rnd.Next(4) << 12) | ((ulong)rnd.Next(512) * 8);
            int kind = rnd.Next(3); // read, write, execute
            bool supervisor = rnd.Next(2) == 1;
            DmaAccess access = kind == 1 ? DmaAccess.Write : DmaAccess.Read;
            DmaRequestAttributes attrs = (supervisor ? DmaRequestAttributes.Privileged : 0) | (kind == 2 ? DmaRequestAttributes.Execute : 0);

            (VtdFaultReason reason, ulong pa, List<ulong> path) = model.Walk(iova, supervisor, kind == 1, kind == 2);
            VtdTranslation t = rig.Unit.Translate(Rid, Pasid, iova, 8, access, attrs);
            string what = $"request {n}: 0x{iova:x} kind {kind} supervisor {supervisor}";
            Assert.True(reason == t.Reason, $"{what}: model 0x{(int)reason:x2}, unit 0x{(int)t.Reason:x2}");
            if (reason == VtdFaultReason.None)
            {
                Assert.True(pa == t.PhysicalAddress, $"{what}: model 0x{pa:x}, unit 0x{t.PhysicalAddress:x}");
                ulong accessed = A | ((q2 & Eafe) != 0 ? EA : 0);
                foreach (ulong e in path)
                {
                    expected[e] |= accessed;
                }

                if (kind == 1)
                {
                    expected[path[^1]] |= D;
                }
            }

            foreach ((ulong address, ulong value) in expected)
            {
                Assert.True(value == rig.Read(address), $"{what}: entry at 0x{address:x} is 0x{rig.Read(address):x}, model 0x{value:x}");
            }
        }
    }

    // Random tables: indices 0–1 at levels 4–2 and 0–3 at level 1; leaves at levels 3 and 2 with PS,
    // now and then PS in a PML4E (a reserved bit); outputs distinct and aligned to the page size.
    private static void Fill(FirstStageRig rig, Random rnd, ulong table, int level, List<ulong> entries, ref int leafCounter)
    {
        int count = level == 1 ? 4 : 2;
        for (int i = 0; i < count; i++)
        {
            ulong bits = (rnd.Next(8) != 0 ? P : 0) | (rnd.Next(4) != 0 ? RW : 0) | (rnd.Next(4) != 0 ? US : 0)
                | (rnd.Next(4) == 0 ? XD : 0) | (rnd.Next(5) == 0 ? A : 0);
            bool leaf = level == 1 || ((level is 2 or 3) && rnd.Next(4) == 0);
            ulong entry;
            if (leaf)
            {
                leafCounter++;
                ulong output = level switch
                {
                    1 => 0x0200_0000 + ((ulong)leafCounter << 12),
                    2 => 0x0400_0000 + ((ulong)leafCounter << 21),
                    _ => 0,
                };
                entry = output | bits | (level > 1 ? PS : 0) | (rnd.Next(5) == 0 ? D : 0);
            }
            else
            {
                ulong next = rig.B.AllocFrame();
                Fill(rig, rnd, next, level - 1, entries, ref leafCounter);
                entry = next | bits | (level == 4 && rnd.Next(12) == 0 ? PS : 0);
            }

            ulong pa = table + ((ulong)i * 8);
            rig.Set(pa, entry);
            entries.Add(pa);
        }
    }

    /// <summary>A plain recursive reading of spec §1.5 over the same bytes (4-level, FL1GP, HAW 46).</summary>
    private sealed class Reference(Func<ulong, ulong> read, ulong root, ulong q2)
    {
        public (VtdFaultReason Reason, ulong Pa, List<ulong> Path) Walk(ulong iova, bool supervisor, bool write, bool execute)
        {
            var path = new List<ulong>();
            if (supervisor && (q2 & Sre) == 0)
            {
                return (VtdFaultReason.SupervisorRequestsDisabled, 0, path);
            }

            if (execute && (q2 & Ere) == 0)
            {
                return (VtdFaultReason.ExecuteRequestsDisabled, 0, path);
            }

            return Level(root, 4, iova, supervisor, write, execute, true, true, false, path);
        }

        private (VtdFaultReason, ulong, List<ulong>) Level(
            ulong table, int level, ulong iova, bool supervisor, bool write, bool execute, bool rw, bool us, bool xd, List<ulong> path)
        {
            int shift = 12 + (9 * (level - 1));
            ulong address = table + (((iova >> shift) & 0x1FF) * 8);
            ulong e = read(address);
            path.Add(address);
            if ((e & P) == 0)
            {
                return (VtdFaultReason.FirstLevelNotPresent, 0, path);
            }

            if (level == 4 && (e & PS) != 0)
            {
                return (VtdFaultReason.FirstLevelReserved, 0, path);
            }

            rw &= (e & RW) != 0;
            us &= (e & US) != 0;
            xd |= (e & XD) != 0;
            if (level > 1 && (level == 4 || (e & PS) == 0))
            {
                return Level(e & 0x000F_FFFF_FFFF_F000, level - 1, iova, supervisor, write, execute, rw, us, xd, path);
            }

            if (!supervisor && !us)
            {
                return (VtdFaultReason.UserAccessDenied, 0, path);
            }

            if (write && !rw && (!supervisor || (q2 & Wpe) != 0))
            {
                return (VtdFaultReason.ScalableWrite, 0, path);
            }

            if (execute && ((xd && (q2 & Nxe) != 0) || (supervisor && us && (q2 & Smep) != 0)))
            {
                return (VtdFaultReason.ExecuteDenied, 0, path);
            }

            ulong size = 1UL << shift;
            return (VtdFaultReason.None, (e & 0x000F_FFFF_FFFF_F000 & ~(size - 1)) | (iova & (size - 1)), path);
        }
    }
}
