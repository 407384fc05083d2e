using System.Globalization;
using Iommu.Devices;

namespace Iommu.VtD.Hardware;

/// <summary>Conversions between <see cref="VtdFaultReason"/>, its hex text and the core's <see cref="DmaFaultReason"/>.</summary>
public static class VtdFaultReasonExtensions
{
    // One name per code, made once: a fault hands out a reference to it and allocates nothing.
    private static readonly string?[] Names = BuildNames();

    /// <summary>The reason as the core's <see cref="DmaFaultReason"/>: the code, with the member's name when it is defined.</summary>
    /// <param name="reason">The VT-d reason.</param>
    /// <returns>The reason a <see cref="DmaResult"/> carries.</returns>
    public static DmaFaultReason ToDmaFaultReason(this VtdFaultReason reason) => new((byte)reason, Names[(byte)reason]);

    /// <summary>The VT-d reason behind a <see cref="DmaFaultReason"/> a VT-d unit returned.</summary>
    /// <param name="reason">A reason from a <see cref="DmaResult"/>.</param>
    /// <returns>The enum member with that code (an undefined member for a byte the enum does not name).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The code does not fit FRCD.FR's 8 bits, so no VT-d unit returned it.</exception>
    public static VtdFaultReason ToVtdFaultReason(this DmaFaultReason reason)
    {
        // Truncating would turn another remapper's 0x185 into VT-d's 0x85.
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)reason.Code, byte.MaxValue, nameof(reason));
        return (VtdFaultReason)(byte)reason.Code;
    }

    /// <summary>The code in hex with the name: <c>0x85 (ScalableWrite)</c>; <c>0xff</c> for an undefined code.</summary>
    /// <param name="reason">The reason.</param>
    /// <returns>The text.</returns>
    public static string Format(this VtdFaultReason reason) =>
        Names[(byte)reason] is string name
            ? string.Create(CultureInfo.InvariantCulture, $"0x{(byte)reason:x2} ({name})")
            : string.Create(CultureInfo.InvariantCulture, $"0x{(byte)reason:x2}");

    private static string?[] BuildNames()
    {
        var names = new string?[256];
        foreach (VtdFaultReason r in Enum.GetValues<VtdFaultReason>())
        {
            names[(byte)r] = r.ToString();
        }

        return names;
    }
}
