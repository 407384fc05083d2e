using System.Globalization;
using System.Text;
using System.Text.Json;

namespace AuxDomainTour;

/// <summary>What the tour found: numbered sections of notes, tables and checks, plus named facts; rendered as text or JSON.</summary>
internal sealed class Report(string mode)
{
    private readonly List<Section> _sections = [];
    private readonly SortedDictionary<string, object?> _facts = new(StringComparer.Ordinal);

    public string Mode { get; } = mode;

    public int Failures { get; private set; }

    public int Checks { get; private set; }

    private Section Current => _sections.Count > 0 ? _sections[^1] : throw new InvalidOperationException("no section");

    public void Section(string title) => _sections.Add(new Section(_sections.Count + 1, title));

    public void Note(string text) => Current.Items.Add(new NoteItem(text));

    public bool Expect(bool ok, string what)
    {
        Current.Items.Add(new CheckItem(ok, what));
        Checks++;
        Failures += ok ? 0 : 1;
        return ok;
    }

    public Table Table(string name, params string[] columns)
    {
        var t = new Table(name, columns);
        Current.Items.Add(t);
        return t;
    }

    /// <summary>A machine-readable value (JSON "facts"); numbers, strings, booleans or lists of them.</summary>
    public void Fact(string key, object? value) => _facts[key] = value;

    public string ToText()
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"AuxDomainTour — IOMMU-aware mediated devices on VT-d ({Mode} mode)");
        foreach (Section s in _sections)
        {
            sb.AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"== {s.Number}. {s.Title}");
            foreach (object item in s.Items)
            {
                switch (item)
                {
                    case NoteItem n:
                        sb.AppendLine(CultureInfo.InvariantCulture, $"  {n.Text}");
                        break;
                    case CheckItem c:
                        sb.AppendLine(CultureInfo.InvariantCulture, $"  [{(c.Ok ? "ok" : "UNEXPECTED")}] {c.Text}");
                        break;
                    case Table t:
                        t.Render(sb);
                        break;
                }
            }
        }

        sb.AppendLine();
        sb.AppendLine(Failures == 0
            ? $"All {Checks} checks behaved as the kernel does."
            : $"{Failures} of {Checks} checks did not behave as expected.");
        return sb.ToString();
    }

    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("tour", "AuxDomainTour");
            w.WriteString("mode", Mode);
            w.WriteBoolean("ok", Failures == 0);
            w.WriteNumber("checks", Checks);
            w.WriteNumber("failures", Failures);
            w.WriteStartObject("facts");
            foreach ((string k, object? v) in _facts)
            {
                w.WritePropertyName(k);
                WriteValue(w, v);
            }

            w.WriteEndObject();
            w.WriteStartArray("sections");
            foreach (Section s in _sections)
            {
                w.WriteStartObject();
                w.WriteNumber("number", s.Number);
                w.WriteString("title", s.Title);
                w.WriteStartArray("notes");
                foreach (NoteItem n in s.Items.OfType<NoteItem>())
                {
                    w.WriteStringValue(n.Text);
                }

                w.WriteEndArray();
                w.WriteStartArray("checks");
                foreach (CheckItem c in s.Items.OfType<CheckItem>())
                {
                    w.WriteStartObject();
                    w.WriteBoolean("ok", c.Ok);
                    w.WriteString("text", c.Text);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteStartObject("tables");
                foreach (Table t in s.Items.OfType<Table>())
                {
                    w.WriteStartArray(t.Name);
                    foreach (string[] row in t.Rows)
                    {
                        w.WriteStartObject();
                        for (int i = 0; i < t.Columns.Length; i++)
                        {
                            w.WriteString(t.Columns[i], row[i]);
                        }

                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                }

                w.WriteEndObject();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray()) + Environment.NewLine;
    }

    private static void WriteValue(Utf8JsonWriter w, object? v)
    {
        switch (v)
        {
            case null:
                w.WriteNullValue();
                break;
            case bool b:
                w.WriteBooleanValue(b);
                break;
            case string s:
                w.WriteStringValue(s);
                break;
            case int i:
                w.WriteNumberValue(i);
                break;
            case long l:
                w.WriteNumberValue(l);
                break;
            case uint u:
                w.WriteNumberValue(u);
                break;
            case ulong ul:
                w.WriteNumberValue(ul);
                break;
            case System.Collections.IEnumerable list:
                w.WriteStartArray();
                foreach (object? o in list)
                {
                    WriteValue(w, o);
                }

                w.WriteEndArray();
                break;
            default:
                w.WriteStringValue(Convert.ToString(v, CultureInfo.InvariantCulture));
                break;
        }
    }

    private sealed record NoteItem(string Text);

    private sealed record CheckItem(bool Ok, string Text);
}

internal sealed class Section(int number, string title)
{
    public int Number { get; } = number;

    public string Title { get; } = title;

    public List<object> Items { get; } = [];
}

/// <summary>A table: a JSON array of objects keyed by column, or aligned text columns.</summary>
internal sealed class Table(string name, string[] columns)
{
    public string Name { get; } = name;

    public string[] Columns { get; } = columns;

    public List<string[]> Rows { get; } = [];

    public void Row(params object?[] cells)
    {
        if (cells.Length != Columns.Length)
        {
            throw new ArgumentException($"table {Name}: {cells.Length} cells for {Columns.Length} columns");
        }

        Rows.Add([.. cells.Select(c => Convert.ToString(c, CultureInfo.InvariantCulture) ?? "")]);
    }

    public void Render(StringBuilder sb)
    {
        int[] width = [.. Columns.Select((c, i) => Math.Max(c.Length, Rows.Count == 0 ? 0 : Rows.Max(r => r[i].Length)))];
        string Line(string[] cells) => "  " + string.Join("  ", cells.Select((c, i) => i == cells.Length - 1 ? c : c.PadRight(width[i]))).TrimEnd();
        sb.AppendLine(Line(Columns));
        sb.AppendLine(Line([.. width.Select(w => new string('-', w))]));
        foreach (string[] r in Rows)
        {
            sb.AppendLine(Line(r));
        }
    }
}
