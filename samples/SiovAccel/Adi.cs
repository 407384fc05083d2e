using System.Buffers.Binary;
using Iommu.Devices;

namespace SiovAccel;

/// <summary>
/// One assignable device interface (a work queue) of the accelerator. Once programmed with a PASID,
/// every DMA it issues carries that PASID, so the IOMMU translates it through the domain the PASID
/// belongs to (an aux domain's PASID, or one the parent allocated and attached).
/// </summary>
/// <remarks>Thread safety: the ADI's registers and its submissions are serialised by its own lock.</remarks>
public sealed class Adi
{
    /// <summary>Completion status: success.</summary>
    public const byte StatusSuccess = 0x01;

    /// <summary>Completion status: the source or destination faulted (DSA_COMP_PAGE_FAULT_NOBOF).</summary>
    public const byte StatusPageFault = 0x03;

    /// <summary>Completion status: unknown opcode.</summary>
    public const byte StatusBadOpcode = 0x10;

    /// <summary>Software error register value: a descriptor was submitted to a disabled ADI.</summary>
    public const ulong SwerrDisabled = 0x1;

    private readonly object _gate = new();

    internal Adi(PciDevice parent, int index)
    {
        Parent = parent;
        Index = index;
    }

    /// <summary>The physical device the ADI belongs to.</summary>
    public PciDevice Parent { get; }

    /// <summary>Index of the work queue.</summary>
    public int Index { get; }

    /// <summary>Whether the ADI is enabled (programmed with a PASID).</summary>
    public bool Enabled { get; private set; }

    /// <summary>The PASID the ADI tags its DMA with, or null while disabled.</summary>
    public uint? Pasid { get; private set; }

    /// <summary>The PASID the parent allocated for this ADI (<see cref="SiovAccelMode.PasidAttach"/>), or null.</summary>
    public uint? AllocatedPasid { get; internal set; }

    /// <summary>The domain attached to <see cref="AllocatedPasid"/> on the parent while the device is open, or null.</summary>
    public Iommu.Domains.IDomain? AttachedDomain { get; internal set; }

    /// <summary>Whether an mdev owns the ADI.</summary>
    public bool Assigned { get; internal set; }

    /// <summary>The software error register: 0, or why the last submission was dropped.</summary>
    public ulong SoftwareError { get; private set; }

    /// <summary>Outcome of the last descriptor's DMA.</summary>
    public DmaResult LastResult { get; private set; }

    internal void Program(uint pasid)
    {
        lock (_gate)
        {
            Pasid = pasid;
            Enabled = true;
            SoftwareError = 0;
        }
    }

    internal void Disable()
    {
        lock (_gate)
        {
            Pasid = null;
            Enabled = false;
        }
    }

    internal void ReadRegisters(int pos, Span<byte> buffer)
    {
        Span<byte> regs = stackalloc byte[SiovAccelDriver.PortalOffset];
        lock (_gate)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(regs, Enabled ? 1u : 0u);
            BinaryPrimitives.WriteUInt32LittleEndian(regs[8..], Pasid ?? 0);
            BinaryPrimitives.WriteUInt64LittleEndian(regs[0x10..], SoftwareError);
            BinaryPrimitives.WriteUInt64LittleEndian(regs[0x18..], LastResult.Status == DmaStatus.Ok ? 0 : LastResult.Address);
        }

        for (int i = 0; i < buffer.Length; i++)
        {
            int p = pos + i;
            buffer[i] = p < regs.Length ? regs[p] : (byte)0;
        }
    }

    // The device executes a descriptor: every access is a PASID-tagged DMA through the IOMMU model.
    internal void Submit(AccelDescriptor d)
    {
        lock (_gate)
        {
            if (!Enabled)
            {
                SoftwareError = SwerrDisabled;
                return;
            }

            uint pasid = Pasid!.Value;
            byte status;
            ulong done = 0;
            if (d.Opcode != AccelDescriptor.OpMemmove)
            {
                status = StatusBadOpcode;
            }
            else
            {
                byte[] data = new byte[d.Size];
                DmaResult r = Parent.DmaRead(pasid, d.Source, data);
                if (r.IsOk)
                {
                    r = Parent.DmaWrite(pasid, d.Destination, data);
                }

                LastResult = r;
                done = r.IsOk ? d.Size : 0;
                status = r.IsOk ? StatusSuccess : StatusPageFault;
            }

            if (d.CompletionAddress != 0)
            {
                byte[] record = new byte[16];
                record[0] = status;
                BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(4), (uint)done);
                BinaryPrimitives.WriteUInt64LittleEndian(record.AsSpan(8), status == StatusPageFault ? LastResult.Address : 0);
                Parent.DmaWrite(pasid, d.CompletionAddress, record);
            }
        }
    }
}
