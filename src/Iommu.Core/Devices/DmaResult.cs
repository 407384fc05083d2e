namespace Iommu.Devices;

/// <summary>What happened to a device DMA.</summary>
/// <param name="Status">Outcome.</param>
/// <param name="Transferred">Bytes moved before the transfer stopped (all of them when <see cref="DmaStatus.Ok"/>).</param>
/// <param name="Address">For a fault or memory error: the device address of the first byte not moved (in the page that stopped it); for success, the physical address of the first byte.</param>
/// <param name="FaultReason">
/// For a fault, why: the hardware's code and name, printed in hex (<c>0x85 (ScalableWrite)</c> on a VT-d
/// unit in scalable mode); <see cref="DmaFaultReason.None"/> otherwise. <see cref="DmaFaultReason.Code"/>
/// gives the number.
/// </param>
/// <remarks><see cref="object.ToString"/> prints the address in hex, as the docs and the fault reason do: <c>DmaResult { Status = Ok, Transferred = 8, Address = 0x800040, FaultReason = none }</c>.</remarks>
// The constructor is forced inline: on the DMA path the JIT's inlining budget ran out before it, and every
// successful read built its result through the stack with a call.
[method: System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
public readonly record struct DmaResult(DmaStatus Status, ulong Transferred, ulong Address, DmaFaultReason FaultReason)
{
    /// <summary>Whether every byte moved.</summary>
    public bool IsOk => Status == DmaStatus.Ok;

    /// <summary>When every byte moved: the physical address of the first byte; otherwise null.</summary>
    public ulong? PhysicalAddress => IsOk ? Address : null;

    /// <summary>When the transfer stopped (a fault or a memory error): the device address of the first byte not moved, in the page that stopped it; otherwise null.</summary>
    public ulong? StopAddress => IsOk ? null : Address;

    // The generated ToString would print the address in decimal (and repeat it as PhysicalAddress or StopAddress);
    // the docs and the fault reason give addresses in hex: DmaResult { Status = Ok, Transferred = 8, Address = 0x800040, FaultReason = none }.
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append(System.Globalization.CultureInfo.InvariantCulture, $"Status = {Status}, Transferred = {Transferred}, Address = 0x{Address:x}, FaultReason = {FaultReason}");
        return true;
    }
}
