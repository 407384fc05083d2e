using System.Text;

namespace VtdEmulator;

/// <summary>The scenario's checks and notes.</summary>
public sealed class EmulatorReport
{
    /// <summary>Each check: what was checked and whether it held.</summary>
    public List<(string What, bool Held)> Checks { get; } = [];

    /// <summary>Notes printed after the checks.</summary>
    public List<string> Lines { get; } = [];

    /// <summary>Whether every check held.</summary>
    public bool AllChecksPassed => Checks.All(c => c.Held);

    /// <summary>Records a check.</summary>
    public void Check(string what, bool held) => Checks.Add((what, held));

    /// <summary>The report as text.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        foreach ((string what, bool held) in Checks)
        {
            sb.Append(held ? "ok   " : "FAIL ").AppendLine(what);
        }

        foreach (string line in Lines)
        {
            sb.AppendLine(line);
        }

        return sb.ToString();
    }
}
