using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;

namespace Iommu.Conformance.Tests;

/// <summary>What QEMU 7.2 should do with a probe, derived from our model's (specification) answer.</summary>
/// <param name="Translated">The DMA goes through.</param>
/// <param name="PhysicalAddress">Where, when translated.</param>
/// <param name="FaultReason">The fault code QEMU records, or null when no fault is recorded.</param>
/// <param name="Difference">Which QEMU-vs-spec difference was applied, or null.</param>
/// <param name="OutsideRam">The DMA passes to an address that is not guest RAM: only the absence of a fault record can be checked.</param>
internal sealed record QemuExpectation(bool Translated, ulong PhysicalAddress, byte? FaultReason, string? Difference, bool OutsideRam = false)
{
    /// <summary>
    /// Our model follows the VT-d specification; QEMU 7.2 differs in the places listed here. Each
    /// difference is an explicit, named expectation (never a silent tolerance).
    /// </summary>
    public static QemuExpectation For(VtdProbeResult model, VtdImage image)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(image);
        if (model.IsTranslated)
        {
            return new QemuExpectation(true, model.PhysicalAddress, null, null);
        }

        if (!model.IsFault)
        {
            throw new InvalidOperationException($"probe outcome {model.Status} is not compared against QEMU");
        }

        byte fr = (byte)model.Reason;
        bool recorded = model.FaultRecorded;
        string? diff = null;
        bool scalable = image.Mode == VtdTranslationMode.Scalable;

        // QEMU 7.2 reads an all-ones paging entry as a failed memory read (its read helper returns -1
        // on error): fault 0x7 (0x3 at the top level) where the spec reports reserved bits (0xC / 0x7A).
        if (model.Reason is VtdFaultReason.PagingEntryReserved or VtdFaultReason.SecondLevelReserved)
        {
            IReadOnlyList<VtdImageEntry> path = image.Path(model.Probe.RequesterId, model.Probe.Pasid, model.Probe.Iova);
            VtdImageEntry last = path[^1];
            if (last.Kind == VtdImageChunkKind.PageTable && last.Value == ulong.MaxValue)
            {
                bool top = path.Count(e => e.Kind == VtdImageChunkKind.PageTable) == 1;
                return new QemuExpectation(false, 0, top ? (byte)0x3 : (byte)0x7, "QEMU 7.2: an all-ones paging entry reads as a memory error (0x7, 0x3 at the top level), not reserved bits (0xC/0x7A)");
            }
        }

        // QEMU 7.2 returns the input of a pass-through request unchecked (vtd_dev_pt_enabled before any width
        // check); the spec faults an input beyond the width, as our model does.
        if (model.Reason is VtdFaultReason.AddressBeyondMgaw or VtdFaultReason.ScalableAddressBeyondWidth
            && image.Path(model.Probe.RequesterId, model.Probe.Pasid, model.Probe.Iova) is [.., VtdImageEntry entry]
            && (entry.Kind == VtdImageChunkKind.LegacyContextTable ? ((entry.Value >> VtdFormat.ContextTtShift) & 3) == VtdFormat.TtPassThrough
                : entry.Kind == VtdImageChunkKind.PasidTable && ((entry.Value >> VtdFormat.PasidPgttShift) & 7) == VtdFormat.PgttPassThrough))
        {
            return new QemuExpectation(true, model.Probe.Iova, null, "QEMU 7.2: pass-through (TT=10 / PGTT=100) passes an input beyond the address width unchecked (spec: fault 0x4 / 0x83)", OutsideRam: true);
        }

        if (scalable)
        {
            switch (model.Reason)
            {
                // QEMU 7.2 reuses the legacy codes for scalable-mode root and context faults.
                case VtdFaultReason.ScalableRootTableReadError: fr = 0x8; diff = "QEMU 7.2: legacy code for a scalable root-table read error (0x38→0x8)"; break;
                case VtdFaultReason.ScalableRootEntryNotPresent: fr = 0x1; diff = "QEMU 7.2: legacy code for scalable root entry not present (0x39→0x1)"; break;
                case VtdFaultReason.ScalableRootEntryReserved: fr = 0xA; diff = "QEMU 7.2: legacy code for scalable root reserved bits (0x3A→0xA)"; break;
                case VtdFaultReason.ScalableContextTableReadError: fr = 0x9; diff = "QEMU 7.2: legacy code for a scalable context read error (0x40→0x9)"; break;
                case VtdFaultReason.ScalableContextEntryNotPresent: fr = 0x2; diff = "QEMU 7.2: legacy code for scalable context not present (0x41→0x2)"; break;
                case VtdFaultReason.ScalableContextEntryReserved: fr = 0xB; diff = "QEMU 7.2: legacy code for scalable context reserved bits (0x42→0xB)"; break;
                case VtdFaultReason.ScalableContextEntryInvalid: fr = 0x3; diff = "QEMU 7.2: legacy code for an invalid scalable context (0x43→0x3)"; break;

                // QEMU 7.2 reports every PASID-directory / PASID-table problem as 0x58, which it treats as
                // non-qualified (recorded even with FPD set).
                case VtdFaultReason.PasidBeyondDirectory or VtdFaultReason.PasidDirectoryReadError or VtdFaultReason.PasidDirectoryEntryNotPresent
                    or VtdFaultReason.PasidDirectoryEntryReserved or VtdFaultReason.PasidTableReadError or VtdFaultReason.PasidEntryNotPresent
                    or VtdFaultReason.PasidEntryReserved or VtdFaultReason.PasidEntryInvalid:
                    diff = $"QEMU 7.2: every PASID-structure fault is 0x58, non-qualified (model 0x{fr:x2})";
                    fr = 0x58;
                    recorded = true;
                    break;

                // QEMU 7.2 walks second level in scalable mode with the legacy fault codes (spec: SSL/SGN codes).
                case VtdFaultReason.SecondLevelReadError: fr = 0x7; diff = "QEMU 7.2: legacy code for a second-level read error (0x78→0x7)"; break;
                case VtdFaultReason.SecondLevelReserved: fr = 0xC; diff = "QEMU 7.2: legacy code for second-level reserved bits (0x7A→0xC)"; break;
                case VtdFaultReason.SecondLevelPointerInvalid: fr = 0x3; diff = "QEMU 7.2: legacy code for an unreadable SLPTPTR (0x7B→0x3)"; break;
                case VtdFaultReason.ScalableAddressBeyondWidth: fr = 0x4; diff = "QEMU 7.2: legacy code for an address beyond the width (0x83→0x4)"; break;
                case VtdFaultReason.ScalableWrite: fr = 0x5; diff = "QEMU 7.2: legacy code for a second-level write fault (0x85→0x5)"; break;
                case VtdFaultReason.ScalableRead: fr = 0x6; diff = "QEMU 7.2: legacy code for a second-level read fault (0x86→0x6)"; break;
                default: break; // 0x87 (output in the interrupt range) is the same in QEMU 7.2
            }
        }

        return new QemuExpectation(false, 0, recorded ? fr : null, diff);
    }

    public override string ToString() =>
        OutsideRam ? $"DMA passes to 0x{PhysicalAddress:x} (not guest RAM), no fault recorded" : Translated ? $"DMA reaches 0x{PhysicalAddress:x}" : FaultReason is byte f ? $"fault 0x{f:x2} recorded" : "blocked, no fault recorded";
}
